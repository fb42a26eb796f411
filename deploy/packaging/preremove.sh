#!/bin/sh
# aupd package: before removal (the .deb's prerm, the .rpm's %preun). On
# removal, stops and disables the units; on upgrade, leaves them running.
#   deb: $1 = remove, upgrade, deconfigure or failed-upgrade
#   rpm: $1 = 0 on removal, 1 or more on upgrade
set -e

case "$1" in
remove | 0) ;;
*) exit 0 ;;
esac

if command -v systemctl >/dev/null 2>&1; then
	if [ -d /run/systemd/system ]; then
		systemctl stop aupd.service aupd-sessiond.service >/dev/null 2>&1 || true
	fi
	systemctl disable aupd.service aupd-sessiond.service >/dev/null 2>&1 || true
fi
exit 0
