#!/usr/bin/env bash
# Build (once) the cached Debian 12 root the test host boots: debootstrap minbase plus
# systemd, sshd and python3 (what Ansible needs). Later runs reuse the cache.
source "$(dirname "$0")/lib.sh"

if [[ -f $BASE_ROOT/.complete ]]; then
	log "debootstrap cache present: $BASE_ROOT"
	exit 0
fi
mkdir -p "$CACHE_DIR"
rm -rf "$BASE_ROOT" "$BASE_ROOT.tmp"
log "debootstrap bookworm into $BASE_ROOT (about a minute)"
debootstrap --variant=minbase --include="$PACKAGES" bookworm "$BASE_ROOT.tmp" "$MIRROR" \
	>"$CACHE_DIR/debootstrap.log" 2>&1 || {
	tail -n 30 "$CACHE_DIR/debootstrap.log" >&2
	exit 1
}
# Same apt sources and settings as the machine running the test, so apt inside behaves alike.
if compgen -G '/etc/apt/sources.list.d/*.sources' >/dev/null; then
	cp /etc/apt/sources.list.d/*.sources "$BASE_ROOT.tmp/etc/apt/sources.list.d/"
	: >"$BASE_ROOT.tmp/etc/apt/sources.list"
fi
for conf in /etc/apt/apt.conf.d/*; do
	grep -q '^Acquire::' "$conf" 2>/dev/null && cp "$conf" "$BASE_ROOT.tmp/etc/apt/apt.conf.d/"
done
touch "$BASE_ROOT.tmp/.complete"
mv "$BASE_ROOT.tmp" "$BASE_ROOT"
log "debootstrap done"
