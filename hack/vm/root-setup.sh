#!/bin/bash
# Runs inside the freshly bootstrapped bookworm guest root: installs the
# packages given as arguments without starting services or creating a
# PostgreSQL cluster, and trims what a throwaway test guest does not need.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
chmod 0755 /usr/sbin/policy-rc.d
mkdir -p /etc/postgresql-common
echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.conf
apt-get -q update
apt-get install -y -q --no-install-recommends "$@"
# LVM in a guest without udev: a complete configuration of our own (every
# other setting keeps lvm's built-in default).
cat >/etc/lvm/lvm.conf <<'LVM'
activation {
	udev_sync = 0
	udev_rules = 0
	monitoring = 0
}
devices {
	obtain_device_list_from_udev = 0
	use_devicesfile = 0
}
global {
	use_lvmpolld = 0
}
LVM
echo untorn-vm >/etc/hostname
apt-get clean
rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* /usr/share/locale/*
