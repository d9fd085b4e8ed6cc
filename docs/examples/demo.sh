#!/bin/bash
# The main job on an embedded default, on a fresh Debian 12 machine, as root:
# install what lazyroot needs, build it, start a loopback registry holding a small demo image
# (busybox from Debian's busybox-static, in eStargz layers), mount it lazily with an overlay:
# only the layers' tables of contents are fetched, file contents as they are read; run the workload
# lazyroot grew from (a shell loop printing the date every 5 seconds) in systemd-nspawn, and
# clean everything up again.
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"

if [ "$(id -u)" != 0 ]; then
	echo "demo.sh: run me as root (mounting FUSE with allow_other and overlayfs needs it)" >&2
	exit 1
fi

# shellcheck source=../../tests/tools/install-deps.sh
. tests/tools/install-deps.sh

meson setup build >/dev/null 2>&1 || meson setup --reconfigure build >/dev/null
ninja -C build >/dev/null
lazyroot=$top/build/cli/lazyroot
py=/usr/bin/python3

work=$(mktemp -d /tmp/lazyroot-demo.XXXXXX)
machine=/var/lib/machines/lazyroot-demo
cleanup() {
	"$lazyroot" umount "$machine" 2>/dev/null || true
	rmdir "$machine" 2>/dev/null || true
	$py tests/tools/registry.py stop --dir "$work/registry" >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

echo "== starting a registry on loopback"
addr=$($py tests/tools/registry.py start --dir "$work/registry")
echo "   $addr"
echo "== building the demo image (eStargz) from Debian's busybox-static and pushing it"
$py tests/tools/mkdemo.py --estargz "$work/demo-layout" >/dev/null
$py tests/tools/push.py "$addr" "$work/demo-layout" demo --tag latest

export LAZYROOT_CACHE_DIR=$work/cache
mkdir -p "$machine"

echo "== lazyroot mount $addr/demo:latest $machine --overlay $work/upper --prefetch=none"
"$lazyroot" mount "$addr/demo:latest" "$machine" --overlay "$work/upper" --prefetch=none
grep " $machine " /proc/self/mountinfo | sed 's/^/   /'
echo "   what the mount fetched (manifest, config and the layers' TOCs only):"
"$lazyroot" stats "$machine" | grep -E 'fetched' | sed 's/^/     /'

echo "== systemd-nspawn on top: the date every 5 seconds, three times"
nspawn_flags=()
[ -d /run/systemd/system ] || nspawn_flags=(--register=no --keep-unit)
systemd-nspawn --quiet "${nspawn_flags[@]}" --directory "$machine" \
	/bin/sh -c 'for i in 1 2 3; do date; sleep 5; done; echo written-in-the-container > /root/x'
echo "   the container's write landed in the overlay's upper dir: $(cat "$work/upper/upper/root/x")"
echo "   after the container ran (the chunks it read were fetched on demand):"
"$lazyroot" stats "$machine" | grep -E 'fetched|chunks' | sed 's/^/     /'

echo "== lazyroot umount $machine"
"$lazyroot" umount "$machine"

echo "== lazyroot run $addr/demo:latest  (the image's own command, from the cache: no network)"
"$lazyroot" run --pull=never "$addr/demo:latest"
echo "== done"
