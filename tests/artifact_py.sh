#!/bin/bash
# artifact_py.sh FIXTURE — the Python reader (python/tqpipe_reader) against the C dequantizer: fixture
# artifacts (zstd off and level 3), exported as fp32 by `tqpipe export` (tq_dequantize_ref), compared bit
# for bit by python/tests/test_reader.py. Skips (77) only when numpy/h5py/hdf5plugin are missing.
set -u
FIX=$1
BIN=${TQ_BIN:?TQ_BIN not set}
SRC=${TQ_SOURCE_DIR:?TQ_SOURCE_DIR not set}
python3 -c "import numpy, h5py, hdf5plugin" 2>/dev/null || { echo "skip: numpy/h5py/hdf5plugin not importable (make pydeps)"; exit 77; }
T=$(mktemp -d /tmp/tq_artifact_py.XXXXXX)
trap 'rm -rf "$T"' EXIT
for level in 0 3; do
  "$FIX" "$T/art$level" --level $level >/dev/null || { echo "FAILED: fixture"; exit 1; }
  "$BIN" export "$T/art$level" --to safetensors "$T/hf$level" --dtype f32 >/dev/null 2>&1 || { echo "FAILED: export"; exit 1; }
  python3 "$SRC/python/tests/test_reader.py" "$T/art$level" "$T/hf$level" || exit 1
done
