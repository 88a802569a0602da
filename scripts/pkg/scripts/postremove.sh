#!/bin/sh
# sallyport package postrm/%postun: forget the removed units. The sallyport
# user and /etc/sallyport (the admin's configs and keys) stay.
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
exit 0
