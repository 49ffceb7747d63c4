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
SUBNET=${FLOWFORGE_TESTHOST_SUBNET:-10.213.77}  # a private /24 only this host uses
HOST_IP=$SUBNET.2
GATEWAY_IP=$SUBNET.1
VETH_OUT=${NETNS}-o      # stays in the root namespace (gateway side)
VETH_IN=${NETNS}-i       # moved into the host's namespace
SSH_USER=deploy
SSH_KEY=$STATE_DIR/id_ed25519
INVENTORY=$STATE_DIR/inventory.yml
NAT_TAG="flowforge-testhost-$NETNS"  # iptables comment: down.sh removes exactly these rules
MIRROR=${FLOWFORGE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES=systemd,systemd-sysv,dbus,openssh-server,python3,sudo,iproute2,ca-certificates

log() { printf '%s testhost: %s\n' "$(date +%T)" "$*" >&2; }

ssh_host() {
	ssh -i "$SSH_KEY" -o BatchMode=yes -o StrictHostKeyChecking=no \
		-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=3 \
		"$SSH_USER@$HOST_IP" "$@"
}
