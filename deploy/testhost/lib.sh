# Shared settings of the local systemd test host (sourced by up.sh, down.sh, build-root.sh).
# Everything is overridable from the environment, so two checkouts can run side by side.
set -euo pipefail

TESTHOST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$TESTHOST_DIR/../.." && pwd)
CACHE_DIR=${FLOWFORGE_TESTHOST_CACHE:-$TESTHOST_DIR/cache}
STATE_DIR=${FLOWFORGE_TESTHOST_STATE:-$TESTHOST_DIR/state}
BASE_ROOT=$CACHE_DIR/bookworm-base          # debootstrap output, reused between runs
HOST_ROOT=$STATE_DIR/root                   # the booted copy, thrown away by down.sh
MACHINE=${FLOWFORGE_TESTHOST_NAME:-flowforge-testhost}
NETNS=${FLOWFORGE_TESTHOST_NETNS:-fftesthost}
SUBNET=${FLOWFORGE_TESTHOST_SUBNET:-10.213.77}  # a private /24 only these hosts use
# How many hosts (1..9), each in a network namespace of its own, all on one bridge.
HOSTS=${FLOWFORGE_TESTHOST_COUNT:-1}
HOST_IP=$SUBNET.2
GATEWAY_IP=$SUBNET.1
BRIDGE=${NETNS}-br       # in the root namespace, holds the gateway address
VETH_OUT=${NETNS}-o      # host 1's veth: this end on the bridge...
VETH_IN=${NETNS}-i       # ...and this one moved into the host's namespace
SSH_USER=deploy
SSH_KEY=$STATE_DIR/id_ed25519
INVENTORY=$STATE_DIR/inventory.yml
NAT_TAG="flowforge-testhost-$NETNS"  # iptables comment: down.sh removes exactly these rules
MIRROR=${FLOWFORGE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES=systemd,systemd-sysv,dbus,openssh-server,python3,sudo,iproute2,ca-certificates

# Host N (1..HOSTS): host 1 keeps the plain names, so one host looks as it always did.
host_name() { if [[ $1 == 1 ]]; then echo "$MACHINE"; else echo "$MACHINE-$1"; fi; }
host_netns() { if [[ $1 == 1 ]]; then echo "$NETNS"; else echo "$NETNS$1"; fi; }
host_ip() { echo "$SUBNET.$(($1 + 1))"; }
host_root() { if [[ $1 == 1 ]]; then echo "$HOST_ROOT"; else echo "$HOST_ROOT-$1"; fi; }
host_pidfile() { if [[ $1 == 1 ]]; then echo "$STATE_DIR/nspawn.pid"; else echo "$STATE_DIR/nspawn-$1.pid"; fi; }

log() { printf '%s testhost: %s\n' "$(date +%T)" "$*" >&2; }

# ssh_host [-n N] COMMAND...: run on host N (default 1).
ssh_host() {
	local ip=$HOST_IP
	if [[ ${1:-} == -n ]]; then ip=$(host_ip "$2"); shift 2; fi
	ssh -i "$SSH_KEY" -o BatchMode=yes -o StrictHostKeyChecking=no \
		-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=3 \
		"$SSH_USER@$ip" "$@"
}
