#!/bin/bash
# artifact_enospc.sh FIXTURE — disk full while writing shards: a 600 KiB tmpfs (needs root and mount
# rights; skipped with 77 otherwise). The writer must fail with "no space left", leave no file under a
# final shard name that is not complete, and leave no temp files behind.
set -u
FIX=$1
M=$(mktemp -d /tmp/tq_artifact_enospc.XXXXXX)
mount -t tmpfs -o size=600k tmpfs "$M" 2>/dev/null || { rmdir "$M"; echo "skip: cannot mount a tmpfs here"; exit 77; }
trap 'umount "$M"; rmdir "$M"' EXIT
"$FIX" "$M/art" --level 0 --shard-bytes 200000 > "$M/../enospc.$$.txt" 2>&1; rc=$?
out=$(cat "$M/../enospc.$$.txt"); rm -f "$M/../enospc.$$.txt"
echo "$out" | tail -2
[ $rc -ne 0 ] || { echo "FAILED: writing 2.5 MB into a 600 KiB file system succeeded"; exit 1; }
echo "$out" | grep -qi "no space left" || { echo "FAILED: the error does not say the disk is full"; exit 1; }
ls "$M/art"/*.tmp.* >/dev/null 2>&1 && { echo "FAILED: temp files left behind"; ls -la "$M/art"; exit 1; }
# every shard under its final name is complete: it opens and holds what it says
# (h5ls from hdf5-tools, else h5py; machines with neither, e.g. the GPU machine, say so)
h5ok() {
  if command -v h5ls >/dev/null 2>&1; then h5ls -r "$1" >/dev/null 2>&1
  elif python3 -c 'import h5py' 2>/dev/null; then python3 -c 'import h5py, sys; h5py.File(sys.argv[1], "r").visit(lambda n: None)' "$1" >/dev/null 2>&1
  else echo "note: neither h5ls nor h5py here: $1 not opened"; return 0; fi
}
for f in "$M"/art/*.tqa.h5; do
  [ -e "$f" ] || continue
  h5ok "$f" || { echo "FAILED: $f has a final name but is not a valid HDF5 file"; exit 1; }
done
[ -e "$M/art/model.tqa.index.json" ] && { echo "FAILED: an index was written for an incomplete artifact"; exit 1; }
echo "artifact_enospc: ok"
