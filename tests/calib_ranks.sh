#!/bin/bash
# calib_ranks.sh BIN MPIRUN — run test_calib_mpi with -np 1, 2 and 4 and require byte-identical
# Hessian files (the exact cross-rank reduction of pipeline/calib.h).
set -u
BIN=$1
MPIRUN=${2:-mpirun}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OPENBLAS_NUM_THREADS=1
for np in 1 2 4; do
  "$MPIRUN" --allow-run-as-root --oversubscribe --mca btl_vader_single_copy_mechanism none -np $np "$BIN" "$tmp/np$np" || { echo "FAILED: np $np"; exit 1; }
done
n=0
for f in "$tmp"/np1/*.hess.zst; do
  b=$(basename "$f")
  for np in 2 4; do
    cmp "$f" "$tmp/np$np/$b" || { echo "FAILED: $b differs between np 1 and np $np"; exit 1; }
  done
  n=$((n + 1))
done
[ "$n" -eq 2 ] || { echo "FAILED: expected 2 Hessian files, found $n"; exit 1; }
echo "ok: $n Hessian files byte-identical for np 1, 2, 4 ($(sha256sum "$tmp"/np1/*.hess.zst | cut -c1-16 | tr '\n' ' '))"
