#!/usr/bin/env bash
# make vagrant-box: the vagrant-lxc box `flowforge/bookworm-lxc`, built locally (no Vagrant
# Cloud) from the Debian 12 root the test host harness already makes (build-root.sh), then
# added to Vagrant. A second run finds the box and does nothing, unless this script changed
# since the box was built (its checksum is in the box's metadata.json). To rebuild anyway:
#   vagrant box remove flowforge/bookworm-lxc && make vagrant-box
# The cached root is copied, never changed. The copy gets what a Vagrant box needs: a
# `vagrant` user with Vagrant's insecure public key (replaced by a key of its own on the
# first `vagrant up`), passwordless sudo, sshd (host keys made at first boot), DHCP on eth0
# through systemd-networkd and DNS from that lease through systemd-resolved.
# Run as root: the root's files belong to root and the box lands in root's Vagrant home.
source "$(dirname "$0")/../testhost/lib.sh"

BOX_NAME=${FLOWFORGE_VAGRANT_BOX:-flowforge/bookworm-lxc}
[[ $(id -u) == 0 ]] || { echo "build-box.sh: run as root (it copies a root-owned tree)" >&2; exit 2; }
command -v vagrant >/dev/null || { echo "build-box.sh: vagrant is not installed" >&2; exit 2; }

log() { printf '%s vagrant-box: %s\n' "$(date +%T)" "$*" >&2; }
recipe=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)
installed=${VAGRANT_HOME:-$HOME/.vagrant.d}/boxes/${BOX_NAME//\//-VAGRANTSLASH-}/0/lxc/metadata.json
if vagrant box list --machine-readable | grep -q ",box-name,$BOX_NAME\$"; then
	if grep -q "\"recipe\": \"$recipe\"" "$installed" 2>/dev/null; then
		log "vagrant box $BOX_NAME present (vagrant box remove $BOX_NAME to rebuild)"
		exit 0
	fi
	log "vagrant box $BOX_NAME was built by another version of this script: rebuilding"
fi

# Vagrant's insecure public key ships inside the vagrant gem (Debian's or HashiCorp's build).
vagrant_gem=$(ruby -e 'puts Gem::Specification.find_by_name("vagrant").gem_dir' 2>/dev/null ||
	true)
insecure_key=""
for candidate in "$vagrant_gem/keys/vagrant.pub" /opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub \
	/usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub; do
	[[ -f $candidate ]] && { insecure_key=$candidate; break; }
done
[[ -n $insecure_key ]] || { echo "build-box.sh: Vagrant's keys/vagrant.pub not found" >&2; exit 1; }

"$TESTHOST_DIR/build-root.sh"
state=${FLOWFORGE_VAGRANT_STATE:-$REPO_DIR/deploy/vagrant-lxc/state}
mkdir -p "$state"
work=$(mktemp -d "$state/box.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
log "copying $BASE_ROOT to $root"
cp -a --reflink=auto "$BASE_ROOT" "$root"
rm -f "$root/.complete"
install -m 0644 "$insecure_key" "$root/root/vagrant.pub"

# Set up inside the copy. systemd-nspawn (no boot, host network) gives apt a /proc, /dev and
# the host's resolver; systemd-resolved's own postinst then points /etc/resolv.conf at it.
cat >"$root/root/box-setup.sh" <<'SETUP'
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends systemd-resolved >/dev/null
apt-get clean
rm -rf /var/lib/apt/lists/*

useradd --create-home --shell /bin/bash vagrant
install -d -m 0700 -o vagrant -g vagrant /home/vagrant/.ssh
install -m 0600 -o vagrant -g vagrant /root/vagrant.pub /home/vagrant/.ssh/authorized_keys
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' >/etc/sudoers.d/vagrant
chmod 0440 /etc/sudoers.d/vagrant
visudo -cq

cat >/etc/systemd/network/10-eth0.network <<'NET'
# vagrant-lxc: eth0 sits on lxc-net's bridge, whose dnsmasq hands out the address and DNS.
[Match]
Name=eth0

[Network]
DHCP=ipv4
NET
systemctl enable systemd-networkd.service systemd-resolved.service ssh.service

# Every container makes its own SSH host keys and machine ID on first boot.
rm -f /etc/ssh/ssh_host_*
mkdir -p /etc/systemd/system/ssh.service.d
cat >/etc/systemd/system/ssh.service.d/host-keys.conf <<'UNIT'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
UNIT
: >/etc/machine-id
rm -f /var/lib/dbus/machine-id
echo flowforge-box >/etc/hostname
printf '127.0.0.1 localhost\n127.0.1.1 flowforge-box\n' >/etc/hosts
SETUP
log "setting up the box root (vagrant user, sudo, sshd, networkd DHCP, resolved)"
systemd-nspawn --quiet --register=no --keep-unit --resolv-conf=copy-host \
	--directory="$root" /bin/bash /root/box-setup.sh
rm -f "$root/root/box-setup.sh" "$root/root/vagrant.pub" "$root/root/.bash_history"

# The box: metadata.json, rootfs.tar.gz (./rootfs/..., numeric owners: vagrant-lxc's template
# strips two components) and lxc-config (appended to each container's config).
log "packing the box"
box=$work/box
mkdir "$box"
tar --numeric-owner --xattrs --xattrs-include='*' -czf "$box/rootfs.tar.gz" -C "$work" ./rootfs
cat >"$box/metadata.json" <<JSON
{
  "provider": "lxc",
  "version": "1.0.0",
  "built-on": "$(date -u +%FT%TZ)",
  "description": "Debian 12 (bookworm) for FlowForge, built by deploy/vagrant-lxc/build-box.sh",
  "recipe": "$recipe"
}
JSON
cat >"$box/lxc-config" <<LXC
# LXC's defaults for any distribution (mounts, capabilities dropped, devices allowed).
lxc.include = /usr/share/lxc/config/common.conf
lxc.arch = $(uname -m)
# No AppArmor profile: hosts without AppArmor (and nested setups) could not load LXC's one.
lxc.apparmor.profile = unconfined
# systemd powers off on SIGRTMIN+4; LXC's default halt signal (SIGPWR) only reaches
# sigpwr.target, so lxc-stop (vagrant halt/destroy) would wait 60 s and then kill.
lxc.signal.halt = SIGRTMIN+4
LXC
tar -cf "$work/flowforge-bookworm-lxc.box" -C "$box" metadata.json rootfs.tar.gz lxc-config
vagrant box add --force --name "$BOX_NAME" "$work/flowforge-bookworm-lxc.box"
log "vagrant box $BOX_NAME added ($(du -h "$work/flowforge-bookworm-lxc.box" | cut -f1))"
