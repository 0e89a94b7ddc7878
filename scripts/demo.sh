#!/usr/bin/env bash
# The demo: build a small ext4 image from a built-in sample tree, pack it as an overlaybd layer blob,
# look inside it, verify it, unpack it to a raw disk and check that with the real e2fsck.
set -euo pipefail
obdlayout=${1:-obdlayout}
here=$(cd "$(dirname "$0")/.." && pwd)
out="$here/demo-out"
rm -rf "$out"
mkdir -p "$out"

echo "== building a 64 MiB ext4 image from fixtures/sample-rootfs"
mke2fs -q -F -t ext4 -O ^has_journal -E root_owner=0:0 -d "$here/fixtures/sample-rootfs" "$out/sample.img" 64M

echo "== obdlayout blob pack: raw image -> tar-wrapped ZFile(LZ4) LSMT layer blob"
"$obdlayout" blob pack "$out/sample.img" "$out/layer.commit" --uuid 01d4feca-e826-4d7a-5ab7-26ed4e61d065

echo "== obdlayout blob info"
"$obdlayout" blob info "$out/layer.commit"

echo "== obdlayout blob verify"
"$obdlayout" blob verify "$out/layer.commit"

echo "== obdlayout blob raw: merge the stack back into a raw disk"
"$obdlayout" blob raw "$out/disk.raw" "$out/layer.commit"
cmp "$out/sample.img" "$out/disk.raw"
echo "   the raw disk equals the packed image byte for byte"

echo "== e2fsck -fn on the unpacked disk"
e2fsck -fn "$out/disk.raw"

echo "== the file system's root, read with debugfs"
debugfs -R 'ls -l /' "$out/disk.raw" 2>/dev/null

shared="$here/../shared/data/overlaybd-golden/mkfs"
if [ -d "$shared" ]; then
    echo "== the real overlaybd tools' two-layer stack from ../shared/data, merged and checked"
    "$obdlayout" blob raw "$out/golden.raw" "$shared/layer0/overlaybd.commit" "$shared/layer1/overlaybd.commit"
    e2fsck -fn "$out/golden.raw"
fi
echo "== demo done: outputs in $out"
