#!/bin/sh
# sallyport package postrm/%postun: forget the removed units. The sallyport
# user and /etc/sallyport (the admin's configs and keys) stay; a purge
# removes /etc/sallyport only when nothing is left in it.
set -e
if [ "$1" = purge ] && [ -d /etc/sallyport ]; then
	rmdir --ignore-fail-on-non-empty /etc/sallyport
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
exit 0
