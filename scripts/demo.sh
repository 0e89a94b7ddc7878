#!/usr/bin/env bash
# The demo: build a two-layer sample image as an OCI layout, convert it to overlaybd with obdlayout,
# then merge the converted layers into a raw disk and check it with the real e2fsck and debugfs.
set -euo pipefail
obdlayout=${1:-obdlayout}
python=${2:-python3}
here=$(cd "$(dirname "$0")/.." && pwd)
out="$here/demo-out"
rm -rf "$out"
mkdir -p "$out"
cd "$here"

echo "== a sample OCI image layout (2 gzip layers) from fixtures/sample-rootfs"
"$python" -m fixtures.sample_layout "$out/source" demo

echo "== obdlayout convert: every layer becomes an overlaybd layer blob (and, for demo-turbo, a TurboOCI layer)"
"$obdlayout" convert "$out/source" "$out/converted" -i demo --overlaybd demo --turbo-oci demo-turbo --verbose
cat "$out/converted/index.json"; echo

echo "== obdlayout verify: digests, annotations, CRCs, e2fsck, and each tree against the source's layers"
"$obdlayout" verify "$out/converted:demo" --against "$out/source"
"$obdlayout" verify "$out/converted:demo-turbo" --against "$out/source:demo"

echo "== obdlayout convert --fstype erofs: TurboOCI with EROFS metadata (checked by fsck.erofs when installed)"
"$obdlayout" convert "$out/source" "$out/converted" -i demo --turbo-oci demo-erofs --fstype erofs
"$obdlayout" verify "$out/converted:demo-erofs" --against "$out/source:demo"

echo "== the layer blobs"
manifest=$("$python" -c "import json,sys; print(json.load(open(sys.argv[1]))['manifests'][0]['digest'].split(':')[1])" "$out/converted/index.json")
mapfile -t layers < <("$python" -c "import json,sys; [print('$out/converted/blobs/sha256/' + l['digest'].split(':')[1]) for l in json.load(open(sys.argv[1]))['layers']]" "$out/converted/blobs/sha256/$manifest")
"$obdlayout" blob verify "${layers[@]}"
"$obdlayout" blob info "${layers[@]}"

echo "== the merged image, as overlaybd would serve it, checked by e2fsck"
"$obdlayout" blob raw "$out/disk.raw" "${layers[@]}"
e2fsck -fn "$out/disk.raw"
for dir in / /etc /srv/www /var; do
    echo "-- $dir"
    debugfs -R "ls -l $dir" "$out/disk.raw" 2>/dev/null
done
echo "-- /srv/www/index.html"
debugfs -R "cat /srv/www/index.html" "$out/disk.raw" 2>/dev/null
echo "== demo done: outputs in $out (push with: skopeo copy --all --preserve-digests oci:$out/converted:demo docker://REGISTRY/demo:obd)"
