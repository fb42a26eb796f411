#!/bin/sh
# aupd package: after removal (the .deb's postrm, the .rpm's %postun).
# Purging the .deb also deletes aupd's state (/var/lib/aupd: the embedded
# NATS server's store; /var/lib/aupd-sessiond) and the Postfix socket's
# directory; dpkg deletes the config files it installed. Files the
# operator added to /etc/aupd and the aupd user stay.
#   deb: $1 = remove, purge, upgrade, failed-upgrade, abort-*, disappear
#   rpm: $1 = 0 on removal, 1 or more on upgrade
set -e

if [ "$1" = purge ]; then
	rm -rf /var/lib/aupd /var/lib/aupd-sessiond /var/spool/postfix/aupd
	rmdir /etc/aupd 2>/dev/null || true
fi

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
