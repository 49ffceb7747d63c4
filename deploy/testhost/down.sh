#!/usr/bin/env bash
# Tear down the local test host(s): power each container off (SIGKILL after 20 s), kill
# anything left in their network namespaces, delete the namespaces, veths, bridge and NAT
# rules, restore ip_forward, delete the copied roots. Safe to run twice or after a
# half-finished up.sh, and whatever FLOWFORGE_TESTHOST_COUNT was.
source "$(dirname "$0")/lib.sh"
quiet=no
[[ ${1:-} == --quiet ]] && quiet=yes
say() { [[ $quiet == yes ]] || log "$@"; }

shopt -s nullglob
pids=()
for pidfile in "$STATE_DIR"/nspawn*.pid; do
	pid=$(cat "$pidfile")
	if kill -0 "$pid" 2>/dev/null; then
		say "powering off nspawn pid $pid ($(basename "$pidfile"))"
		kill -TERM "$pid" 2>/dev/null || true # nspawn asks the container's systemd to power off
		pids+=("$pid")
	fi
	rm -f "$pidfile"
done
for pid in "${pids[@]}"; do
	for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
	kill -KILL "$pid" 2>/dev/null || true
done
for netns in $(ip netns list | awk '{print $1}' | grep -E "^$NETNS[0-9]*\$" || true); do
	left=$(ip netns pids "$netns" || true)
	[[ -n $left ]] && kill -KILL $left 2>/dev/null || true
	ip netns del "$netns" && say "deleted network namespace $netns"
	# Its veth's outer end goes with it, asynchronously: gone meanwhile is fine.
	ip link del "$netns-o" 2>/dev/null || true
done
ip link del "$VETH_OUT" 2>/dev/null || true
if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link del "$BRIDGE" && say "deleted bridge $BRIDGE"; fi
for table in nat filter; do
	rules=$(iptables -t "$table" -S | grep -F -- "--comment $NAT_TAG" || true)
	while read -r rule; do
		[[ -n $rule ]] && eval iptables -t "$table" "${rule/#-A /-D }"
	done <<<"$rules"
done
if [[ -f $STATE_DIR/ip_forward.orig ]]; then
	sysctl -qw "net.ipv4.ip_forward=$(cat "$STATE_DIR/ip_forward.orig")"
	rm -f "$STATE_DIR/ip_forward.orig"
fi
removing=()
for root in "$HOST_ROOT" "$HOST_ROOT"-*; do
	[[ -d $root ]] || continue
	findmnt -R -n -o TARGET "$root" >/dev/null 2>&1 && umount -R "$root"
	rm -rf "$root" &
	removing+=("$root")
done
wait
for root in "${removing[@]}"; do say "deleted $root"; done
rm -f "$INVENTORY"
exit 0
