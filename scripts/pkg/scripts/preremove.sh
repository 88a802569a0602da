#!/bin/sh
# sallyport package prerm/%preun: the package started no service, so it
# stops none; it only says which ones still run the binary being removed.
set -e
if [ -d /run/systemd/system ]; then
	for u in $(systemctl list-units --state=active --plain --no-legend 'sallyport-*' 2>/dev/null | awk '{print $1}'); do
		echo "sallyport: $u is still running; stop it with: systemctl stop $u" >&2
	done
fi
exit 0
