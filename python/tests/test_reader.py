"""Python reader equality test: every tensor of a tqpipe artifact dequantized by tqpipe_reader must be
bit-for-bit equal to tqpipe's own C dequantization, taken from `tqpipe export --dtype f32`
(tq_dequantize_ref written as fp32 safetensors, read here with a minimal parser).

    python3 test_reader.py ARTIFACT_DIR EXPORTED_F32_DIR
Exit 0 on success, 1 on a mismatch, 77 when numpy/h5py/hdf5plugin are missing (CTest skip)."""
import json
import os
import sys

try:
    import numpy as np
    import h5py  # noqa: F401
    import hdf5plugin  # noqa: F401
except ImportError as e:
    print("skip: %s (run `make pydeps`)" % e)
    sys.exit(77)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tqpipe_reader  # noqa: E402


def read_safetensors_dir(d):
    """name -> float32 array from model.safetensors or the shards listed in the index."""
    files = []
    idx = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    out = {}
    for fn in files:
        with open(os.path.join(d, fn), "rb") as f:
            raw = f.read()
        n = int.from_bytes(raw[:8], "little")
        hdr = json.loads(raw[8:8 + n])
        base = 8 + n
        for name, e in hdr.items():
            if name == "__metadata__":
                continue
            assert e["dtype"] == "F32", (name, e["dtype"])
            b, end = e["data_offsets"]
            out[name] = np.frombuffer(raw[base + b:base + end], dtype="<f4").reshape(e["shape"])
    return out


def main():
    art_dir, hf_dir = sys.argv[1], sys.argv[2]
    ref = read_safetensors_dir(hf_dir)
    failures = 0
    with tqpipe_reader.open(art_dir) as art:
        names = art.names()
        if sorted(ref) != names:
            print("FAILED: tensor lists differ: %s" % sorted(set(ref) ^ set(names)))
            failures += 1
        codecs = set()
        for name in names:
            info = art.info(name)
            codecs.add(info["codec"])
            got = art.dequantize(name)
            want = ref.get(name)
            if want is None:
                continue
            if got.shape != want.shape or got.dtype != np.float32:
                print("FAILED %s: shape %s/%s dtype %s" % (name, got.shape, want.shape, got.dtype))
                failures += 1
                continue
            bad = np.count_nonzero(got.view(np.uint32) != want.view(np.uint32))
            if bad:
                diff = np.max(np.abs(got.astype(np.float64) - want))
                print("FAILED %s (%s): %d of %d values differ from the C dequantizer (max |diff| %.3g)"
                      % (name, info["codec"], bad, got.size, diff))
                failures += 1
        cfg = art.config
        if art.index.get("config_json") and not isinstance(cfg, dict):
            print("FAILED: config not readable")
            failures += 1
    if failures:
        print("test_reader: %d FAILED" % failures)
        return 1
    print("test_reader: ok, %d tensors, %d codecs (%s) bit-exact with tq_dequantize_ref"
          % (len(names), len(codecs), ",".join(sorted(codecs))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
