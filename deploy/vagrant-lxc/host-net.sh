#!/usr/bin/env bash
# Host networking for `vagrant up --provider=lxc`: LXC's own lxc-net (the bridge lxcbr0 the
# containers' eth0 joins, dnsmasq for DHCP and DNS, NAT out so apt works inside).
#   host-net.sh up     start lxc-net unless it already runs (a systemd host usually starts
#                      lxc-net.service when the lxc package is installed: then it is left be)
#   host-net.sh down   stop what `up` started: lxc-net's bridge, dnsmasq and iptables rules,
#                      ip_forward as it was before; plus the private network's bridge if a
#                      crashed `vagrant` left it behind. Safe to run twice.
# Without systemd as PID 1 (containers, CI sandboxes) lxc-net.service cannot run: the script
# calls lxc-net itself, as the unit would. Run as root.
set -euo pipefail

STATE_DIR=${FLOWFORGE_VAGRANT_NET_STATE:-/run/flowforge-vagrant-lxc}
# The bridge of the Vagrantfile's private network under lxc (lxc__bridge_name); vagrant-lxc
# makes it on `vagrant up` and removes it on `vagrant halt`/`destroy`.
PRIVATE_BRIDGE=${FLOWFORGE_VAGRANT_BRIDGE:-ffvagrant0}
LXC_RUN=/run/lxc # lxc-net's own state: network_up exists while it runs

log() { printf '%s host-net: %s\n' "$(date +%T)" "$*" >&2; }

lxc_net() {
	local candidate
	for candidate in /usr/libexec/lxc/lxc-net /usr/lib/*/lxc/lxc-net /usr/lib/lxc/lxc-net; do
		[[ -x $candidate ]] && { echo "$candidate"; return; }
	done
	echo "host-net.sh: lxc-net not found (install the lxc package)" >&2
	exit 2
}

up() {
	mkdir -p "$STATE_DIR"
	if [[ -f $LXC_RUN/network_up ]]; then
		if [[ -f $STATE_DIR/started ]]; then
			log "lxc-net already up (started by this script)"
		else
			log "lxc-net already up (not ours: left as it is)"
		fi
		return
	fi
	sysctl -n net.ipv4.ip_forward >"$STATE_DIR/ip_forward.orig"
	touch "$STATE_DIR/started"
	"$(lxc_net)" start
	[[ -f $LXC_RUN/network_up ]] || {
		echo "host-net.sh: lxc-net did not start: is USE_LXC_BRIDGE=\"true\" in /etc/default/lxc-net?" >&2
		down
		exit 1
	}
	log "lxc-net up: $(ip -br -4 addr show dev "$(lxc_bridge)" 2>/dev/null || echo '?')"
}

# The bridge LXC puts eth0 on (lxc.net.0.link of /etc/lxc/default.conf).
lxc_bridge() {
	sed -n 's/^lxc\.net\.0\.link *= *//p' /etc/lxc/default.conf 2>/dev/null | head -n1
}

down() {
	if [[ -f $STATE_DIR/started ]]; then
		if [[ -f $LXC_RUN/network_up ]]; then
			"$(lxc_net)" stop
			log "lxc-net stopped"
		fi
		if [[ -f $STATE_DIR/ip_forward.orig ]]; then
			sysctl -qw "net.ipv4.ip_forward=$(cat "$STATE_DIR/ip_forward.orig")"
		fi
		rm -f "$STATE_DIR/started" "$STATE_DIR/ip_forward.orig"
	fi
	if [[ -d /sys/class/net/$PRIVATE_BRIDGE/brif ]]; then
		# vagrant-lxc leaves the bridge when, at destroy, the dead container's end of the
		# private network (pipework's veth1pl<container PID>) still exists: the kernel
		# removes that veth only when it frees the container's network namespace, a minute
		# later or more. A port whose container PID is gone is such a leftover: delete it.
		local port
		for port in /sys/class/net/"$PRIVATE_BRIDGE"/brif/veth1pl*; do
			[[ -e $port ]] || continue
			port=${port##*/}
			[[ -d /proc/${port#veth1pl} ]] || ip link del "$port" 2>/dev/null || true
		done
		if ! compgen -G "/sys/class/net/$PRIVATE_BRIDGE/brif/*" >/dev/null; then
			ip link del "$PRIVATE_BRIDGE"
			log "removed the unused bridge $PRIVATE_BRIDGE"
		fi
	fi
	rmdir "$STATE_DIR" 2>/dev/null || true
}

[[ $(id -u) == 0 ]] || { echo "host-net.sh: run as root (bridge, dnsmasq, iptables)" >&2; exit 2; }
case ${1:-} in
up) up ;;
down) down ;;
*)
	echo "usage: host-net.sh up|down" >&2
	exit 2
	;;
esac
