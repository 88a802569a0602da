#!/bin/sh
# sallyport package postinst/%post: create the gateway's system user and
# group and let systemd see the units. It enables and starts nothing, and it
# does not apply the sysctl.d drop-in: the admin does that after writing
# /etc/sallyport/server.toml (see /usr/share/doc/sallyport/README.md).
set -e
if ! getent group sallyport >/dev/null; then
	groupadd --system sallyport
fi
if ! getent passwd sallyport >/dev/null; then
	useradd --system --gid sallyport --home-dir /var/lib/sallyport --no-create-home \
		--shell /usr/sbin/nologin --comment "sallyport VPN gateway" sallyport
fi
# Configs and keys: root writes, the gateway's group reads. The package
# ships no /etc/sallyport of its own (its group exists only from here on);
# an existing one keeps its contents and gets this owner and mode.
install -d -o root -g sallyport -m 0750 /etc/sallyport
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
exit 0
