#!/bin/sh
# aupd package: after install or upgrade (the .deb's postinst, the .rpm's
# %post). Creates the aupd system user and gives it its directories.
# Starts, enables and restarts nothing: aupd must be configured first, and
# an upgrade may need a config change (CHANGELOG.md, **BREAKING**).
#   deb: $1 = configure (others: abort-*), $2 = the version upgraded from
#   rpm: $1 = 1 on install, 2 or more on upgrade
set -e

case "$1" in
configure) [ -z "${2:-}" ] && first=1 || first=0 ;;
1) first=1 ;;
[0-9]*) first=0 ;;
*) exit 0 ;;
esac

# The user and group aupd (deploy/systemd/aupd.sysusers): systemd-sysusers
# where systemd is, else useradd (shadow), else adduser.
if ! getent passwd aupd >/dev/null 2>&1; then
	if command -v systemd-sysusers >/dev/null 2>&1; then
		systemd-sysusers /usr/lib/sysusers.d/aupd.conf
	elif command -v useradd >/dev/null 2>&1; then
		getent group aupd >/dev/null 2>&1 || groupadd --system aupd
		useradd --system --gid aupd --home-dir /var/lib/aupd --no-create-home \
			--shell /usr/sbin/nologin --comment "aupd abuse and spam suspension service" aupd
	else
		adduser --system --group --home /var/lib/aupd --no-create-home \
			--shell /usr/sbin/nologin --gecos "aupd abuse and spam suspension service" aupd
	fi
fi

# aupd reads its config (group aupd) and owns its state. A config file
# the operator gave another owner keeps it.
chgrp aupd /etc/aupd
chmod 0750 /etc/aupd
if [ -f /etc/aupd/aupd.yml ] && [ "$(stat -c %U:%G /etc/aupd/aupd.yml)" = root:root ]; then
	chgrp aupd /etc/aupd/aupd.yml
fi
chown aupd:aupd /var/lib/aupd
chmod 0750 /var/lib/aupd

# The directory of the Postfix policy socket under smtpd's chroot
# (docs/postfix.md): the setgid bit gives the socket the group postfix.
if [ -d /var/spool/postfix ] && getent group postfix >/dev/null 2>&1 && [ ! -e /var/spool/postfix/aupd ]; then
	install -d -o aupd -g postfix -m 2750 /var/spool/postfix/aupd
fi

if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi

if [ "$first" = 1 ]; then
	cat <<'MSG'
aupd is installed and not started. Configure it, then start it:
  edit /etc/aupd/aupd.yml            (docs: /usr/share/doc/aupd)
  aupd check-config /etc/aupd/aupd.yml
  systemctl enable --now aupd
On a Dovecot host, aupd-sessiond instead (/etc/aupd/sessiond.yml).
MSG
elif [ -d /run/systemd/system ]; then
	for unit in aupd aupd-sessiond; do
		if systemctl is-active --quiet "$unit.service"; then
			echo "$unit is running the version before the upgrade: read CHANGELOG.md, then restart it (systemctl restart $unit)."
		fi
	done
fi
exit 0
