#!/usr/bin/env bash
# A local Debian 12 systemd host for FlowForge, without a hypervisor (make vm):
# the cached debootstrap root (build-root.sh) copied and booted with `systemd-nspawn -b` in a
# network namespace of its own (veth, $SUBNET.0/24, NAT out so apt works inside), reached
# over SSH with a generated key, then deployed with deploy/ansible/deploy.yml like any host.
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
# Leftovers of an interrupted run (namespace, NAT rules, copied root) go first.
"$TESTHOST_DIR/down.sh" --quiet

"$TESTHOST_DIR/build-root.sh"
mkdir -p "$STATE_DIR"
log "copying the root to $HOST_ROOT"
cp -a --reflink=auto "$BASE_ROOT" "$HOST_ROOT"

# Root set-up: name, DNS, an SSH user with passwordless sudo (as on a cloud VM).
[[ -f $SSH_KEY ]] || ssh-keygen -q -t ed25519 -N '' -C flowforge-testhost -f "$SSH_KEY"
echo "$MACHINE" >"$HOST_ROOT/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 %s\n' "$MACHINE" >"$HOST_ROOT/etc/hosts"
rm -f "$HOST_ROOT/etc/resolv.conf"
cp -L /etc/resolv.conf "$HOST_ROOT/etc/resolv.conf"
chroot "$HOST_ROOT" useradd --create-home --shell /bin/bash "$SSH_USER"
install -d -m 0700 -o 1000 -g 1000 "$HOST_ROOT/home/$SSH_USER/.ssh"
install -m 0600 -o 1000 -g 1000 "$SSH_KEY.pub" "$HOST_ROOT/home/$SSH_USER/.ssh/authorized_keys"
chroot "$HOST_ROOT" chown -R "$SSH_USER:" "/home/$SSH_USER/.ssh"
echo "$SSH_USER ALL=(ALL) NOPASSWD: ALL" >"$HOST_ROOT/etc/sudoers.d/$SSH_USER"
chmod 0440 "$HOST_ROOT/etc/sudoers.d/$SSH_USER"

# Network: a namespace with one veth end inside, the gateway end here, NAT out.
log "network namespace $NETNS: host $HOST_IP, gateway $GATEWAY_IP"
ip netns add "$NETNS"
ip link add "$VETH_OUT" type veth peer name "$VETH_IN"
ip link set "$VETH_IN" netns "$NETNS"
ip addr add "$GATEWAY_IP/24" dev "$VETH_OUT"
ip link set "$VETH_OUT" up
ip -n "$NETNS" link set lo up
ip -n "$NETNS" addr add "$HOST_IP/24" dev "$VETH_IN"
ip -n "$NETNS" link set "$VETH_IN" up
ip -n "$NETNS" route add default via "$GATEWAY_IP"
sysctl -n net.ipv4.ip_forward >"$STATE_DIR/ip_forward.orig"
sysctl -qw net.ipv4.ip_forward=1
iptables -t nat -A POSTROUTING -s "$SUBNET.0/24" ! -o "$VETH_OUT" -j MASQUERADE \
	-m comment --comment "$NAT_TAG"
iptables -I FORWARD -i "$VETH_OUT" -j ACCEPT -m comment --comment "$NAT_TAG"
iptables -I FORWARD -o "$VETH_OUT" -j ACCEPT -m comment --comment "$NAT_TAG"

log "booting $MACHINE (systemd-nspawn -b)"
setsid systemd-nspawn --quiet --register=no --keep-unit --boot --console=passive \
	--machine="$MACHINE" --directory="$HOST_ROOT" \
	--network-namespace-path="/run/netns/$NETNS" \
	</dev/null >"$STATE_DIR/console.log" 2>&1 &
echo $! >"$STATE_DIR/nspawn.pid"

for _ in $(seq 120); do
	ssh_host true 2>/dev/null && break
	kill -0 "$(cat "$STATE_DIR/nspawn.pid")" 2>/dev/null || {
		cat "$STATE_DIR/console.log" >&2
		echo "up.sh: systemd-nspawn exited" >&2
		exit 1
	}
	sleep 0.5
done
state=$(ssh_host systemctl is-system-running --wait || true)
log "host is up (systemd: $state), ssh $SSH_USER@$HOST_IP -i $SSH_KEY"

cat >"$INVENTORY" <<INV
# Written by deploy/testhost/up.sh: the local nspawn test host in every group.
all:
  hosts:
    $MACHINE:
      ansible_host: $HOST_IP
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
database:
  hosts:
    $MACHINE:
api:
  hosts:
    $MACHINE:
worker:
  hosts:
    $MACHINE:
monitoring:
  hosts:
    $MACHINE:
INV

if [[ $deploy == yes ]]; then
	ansible_playbook=$REPO_DIR/.venv/bin/ansible-playbook
	[[ -x $ansible_playbook ]] || ansible_playbook=ansible-playbook
	log "deploying: ansible-playbook -i $INVENTORY deploy/ansible/deploy.yml"
	ANSIBLE_CONFIG=$REPO_DIR/deploy/ansible/ansible.cfg \
		"$ansible_playbook" -i "$INVENTORY" "$REPO_DIR/deploy/ansible/deploy.yml"
	log "the API answers through nginx at https://$HOST_IP" \
		"(try: curl --cacert $REPO_DIR/deploy/ansible/credentials/ca.crt https://$HOST_IP/health)"
fi
log "inventory: $INVENTORY; tear down with deploy/testhost/down.sh (make vm-destroy)"
