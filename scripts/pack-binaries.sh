#!/usr/bin/env bash
# Packs prebuilt binary folders (.gl/<name>, each with its BUILT_FROM) into one gzipped tarball for
# a device call's carry; scripts/gpu-check.sh unpacks it with UNPACK=<tarball>. Prints the folders,
# their commits and the tarball's size (the carry limit is 64 MiB).
#
#   scripts/pack-binaries.sh .gl/bundle.tgz .gl/cluster .gl/m13-cli ...
set -eu -o pipefail
out="$1"
shift
for d in "$@"; do
  [[ -f "$d/BUILT_FROM" ]] || { echo "pack-binaries: $d has no BUILT_FROM" >&2; exit 1; }
  echo "$d  $(cat "$d/BUILT_FROM")  $(du -sh "$d" | cut -f1)"
done
tar -czf "$out" "$@"
size=$(stat -c %s "$out")
echo "$out: $((size / 1048576)) MiB"
(( size < 60 * 1048576 )) || { echo "pack-binaries: over 60 MiB, leave some folders out" >&2; exit 1; }
