#!/usr/bin/env bash
# Tear down the local test host: power the container off (SIGKILL after 20 s), kill anything
# left in its network namespace, delete the namespace, veth and NAT rules, restore
# ip_forward, delete the copied root. Safe to run twice or after a half-finished up.sh.
source "$(dirname "$0")/lib.sh"
quiet=no
[[ ${1:-} == --quiet ]] && quiet=yes
say() { [[ $quiet == yes ]] || log "$@"; }

if [[ -f $STATE_DIR/nspawn.pid ]]; then
	pid=$(cat "$STATE_DIR/nspawn.pid")
	if kill -0 "$pid" 2>/dev/null; then
		say "powering off $MACHINE (nspawn pid $pid)"
		kill -TERM "$pid" 2>/dev/null || true # nspawn asks the container's systemd to power off
		for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$STATE_DIR/nspawn.pid"
fi
if ip netns list | grep -qw "^$NETNS"; then
	pids=$(ip netns pids "$NETNS" || true)
	[[ -n $pids ]] && kill -KILL $pids 2>/dev/null || true
	ip netns del "$NETNS" && say "deleted network namespace $NETNS"
fi
if ip link show "$VETH_OUT" >/dev/null 2>&1; then ip link del "$VETH_OUT"; fi
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
if [[ -d $HOST_ROOT ]]; then
	findmnt -R -n -o TARGET "$HOST_ROOT" >/dev/null 2>&1 && umount -R "$HOST_ROOT"
	rm -rf "$HOST_ROOT"
	say "deleted $HOST_ROOT"
fi
rm -f "$INVENTORY"
exit 0
