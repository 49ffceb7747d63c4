#!/usr/bin/env bash
# A local Debian 12 systemd host for FlowForge, without a hypervisor (make vm), or several
# (FLOWFORGE_TESTHOST_COUNT=N): the cached debootstrap root (build-root.sh) copied and booted
# with `systemd-nspawn -b`, each host in a network namespace of its own with a veth into one
# bridge ($SUBNET.0/24, NAT out so apt works inside), reached over SSH with a generated key,
# then deployed with deploy/ansible/deploy.yml like any host.
#   up.sh              build/boot/deploy, print where the API answers
#   up.sh --no-deploy  boot only (the deploy tests run the playbook themselves)
# Tear down with down.sh (make vm-destroy): container, namespace, NAT rules, copied root.
source "$(dirname "$0")/lib.sh"

deploy=yes
[[ ${1:-} == --no-deploy ]] && deploy=no
[[ $(id -u) == 0 ]] || { echo "up.sh: run as root (debootstrap, nspawn, netns, iptables)" >&2; exit 2; }
if [[ -f $STATE_DIR/nspawn.pid ]] && kill -0 "$(cat "$STATE_DIR/nspawn.pid")" 2>/dev/null; then
	echo "up.sh: the test host is already running; down.sh first" >&2
	exit 2
fi
# Leftovers of an interrupted run (namespaces, bridge, NAT rules, copied roots) go first.
"$TESTHOST_DIR/down.sh" --quiet
[[ $HOSTS =~ ^[1-9]$ ]] || { echo "up.sh: FLOWFORGE_TESTHOST_COUNT must be 1..9" >&2; exit 2; }

"$TESTHOST_DIR/build-root.sh"
mkdir -p "$STATE_DIR"
[[ -f $SSH_KEY ]] || ssh-keygen -q -t ed25519 -N '' -C flowforge-testhost -f "$SSH_KEY"

# Network: a bridge holding the gateway address, NAT out (so apt works inside); each host in
# a namespace of its own with a veth into the bridge, so the hosts reach each other.
log "bridge $BRIDGE: gateway $GATEWAY_IP, $HOSTS host(s) from $HOST_IP"
ip link add "$BRIDGE" type bridge
ip addr add "$GATEWAY_IP/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
sysctl -n net.ipv4.ip_forward >"$STATE_DIR/ip_forward.orig"
sysctl -qw net.ipv4.ip_forward=1
iptables -t nat -A POSTROUTING -s "$SUBNET.0/24" ! -o "$BRIDGE" -j MASQUERADE \
	-m comment --comment "$NAT_TAG"
iptables -I FORWARD -i "$BRIDGE" -j ACCEPT -m comment --comment "$NAT_TAG"
iptables -I FORWARD -o "$BRIDGE" -j ACCEPT -m comment --comment "$NAT_TAG"

hosts_file="127.0.0.1 localhost"$'\n'
for n in $(seq "$HOSTS"); do hosts_file+="$(host_ip "$n") $(host_name "$n")"$'\n'; done

for n in $(seq "$HOSTS"); do
	name=$(host_name "$n") netns=$(host_netns "$n") ip=$(host_ip "$n") root=$(host_root "$n")
	log "copying the root to $root ($name, $ip)"
	cp -a --reflink=auto "$BASE_ROOT" "$root"
	# Root set-up: name, DNS, an SSH user with passwordless sudo (as on a cloud VM).
	echo "$name" >"$root/etc/hostname"
	printf '%s127.0.1.1 %s\n' "$hosts_file" "$name" >"$root/etc/hosts"
	rm -f "$root/etc/resolv.conf"
	cp -L /etc/resolv.conf "$root/etc/resolv.conf"
	chroot "$root" useradd --create-home --shell /bin/bash "$SSH_USER"
	install -d -m 0700 -o 1000 -g 1000 "$root/home/$SSH_USER/.ssh"
	install -m 0600 -o 1000 -g 1000 "$SSH_KEY.pub" "$root/home/$SSH_USER/.ssh/authorized_keys"
	chroot "$root" chown -R "$SSH_USER:" "/home/$SSH_USER/.ssh"
	echo "$SSH_USER ALL=(ALL) NOPASSWD: ALL" >"$root/etc/sudoers.d/$SSH_USER"
	chmod 0440 "$root/etc/sudoers.d/$SSH_USER"

	ip netns add "$netns"
	ip link add "$netns-o" type veth peer name "$netns-i"
	ip link set "$netns-i" netns "$netns"
	ip link set "$netns-o" master "$BRIDGE"
	ip link set "$netns-o" up
	ip -n "$netns" link set lo up
	ip -n "$netns" addr add "$ip/24" dev "$netns-i"
	ip -n "$netns" link set "$netns-i" up
	ip -n "$netns" route add default via "$GATEWAY_IP"

	log "booting $name (systemd-nspawn -b)"
	setsid systemd-nspawn --quiet --register=no --keep-unit --boot --console=passive \
		--machine="$name" --directory="$root" --network-namespace-path="/run/netns/$netns" \
		</dev/null >"$STATE_DIR/console-$n.log" 2>&1 &
	echo $! >"$(host_pidfile "$n")"
done

for n in $(seq "$HOSTS"); do
	for _ in $(seq 120); do
		ssh_host -n "$n" true 2>/dev/null && break
		kill -0 "$(cat "$(host_pidfile "$n")")" 2>/dev/null || {
			cat "$STATE_DIR/console-$n.log" >&2
			echo "up.sh: systemd-nspawn exited ($(host_name "$n"))" >&2
			exit 1
		}
		sleep 0.5
	done
	state=$(ssh_host -n "$n" systemctl is-system-running --wait || true)
	log "$(host_name "$n") is up (systemd: $state), ssh $SSH_USER@$(host_ip "$n") -i $SSH_KEY"
done

# The inventory: one host is in every group; with more, host 1 holds the database, the
# workers, the balancer (lb) and monitoring, and the others are api hosts behind it.
{
	echo "# Written by deploy/testhost/up.sh: the local nspawn test host(s)."
	echo "all:"
	echo "  hosts:"
	for n in $(seq "$HOSTS"); do
		cat <<HOST
    $(host_name "$n"):
      ansible_host: $(host_ip "$n")
      ansible_user: $SSH_USER
      ansible_ssh_private_key_file: $SSH_KEY
      ansible_ssh_common_args: -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
      ansible_python_interpreter: /usr/bin/python3
      # Inside a container the memory facts show the whole machine's RAM: tune for 2 GiB.
      postgresql_ram_mb: 2048
      # The deploy tests stop the worker mid-task: keep the drain short.
      flowforge_env_extra:
        WORKER_SHUTDOWN_TIMEOUT: 5s
        API_WORKERS: "2"
      # Prometheus scrapes and evaluates every 2 s and alerts after 10 s: a stopped worker
      # raises its alert within seconds.
      monitoring_scrape_interval: 2s
      monitoring_evaluation_interval: 2s
      monitoring_rules_for: 10s
HOST
	done
	if [[ $HOSTS == 1 ]]; then
		groups=(database api worker monitoring)
	else
		groups=(database worker lb monitoring api)
	fi
	for group in "${groups[@]}"; do
		echo "$group:"
		echo "  hosts:"
		if [[ $HOSTS == 1 || $group != api ]]; then
			echo "    $MACHINE:"
		else
			for n in $(seq 2 "$HOSTS"); do echo "    $(host_name "$n"):"; done
		fi
	done
} >"$INVENTORY"

if [[ $deploy == yes ]]; then
	ansible_playbook=$REPO_DIR/.venv/bin/ansible-playbook
	[[ -x $ansible_playbook ]] || ansible_playbook=ansible-playbook
	log "deploying: ansible-playbook -i $INVENTORY deploy/ansible/deploy.yml"
	ANSIBLE_CONFIG=$REPO_DIR/deploy/ansible/ansible.cfg \
		"$ansible_playbook" -i "$INVENTORY" "$REPO_DIR/deploy/ansible/deploy.yml"
	if [[ $HOSTS == 1 ]]; then
		log "the API answers through nginx at https://$HOST_IP" \
			"(try: curl --cacert $REPO_DIR/deploy/ansible/credentials/ca.crt https://$HOST_IP/health)"
	else
		log "HAProxy answers at https://$HOST_IP" \
			"(try: curl --cacert $REPO_DIR/deploy/ansible/credentials/ca.crt https://$HOST_IP/health)"
	fi
fi
log "inventory: $INVENTORY; tear down with deploy/testhost/down.sh (make vm-destroy)"
