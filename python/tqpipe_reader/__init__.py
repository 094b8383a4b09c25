"""tqpipe_reader — read tqpipe packed artifacts (docs/FORMAT.md) from Python.

Open an artifact directory, list its tensors, read their packed parts and dequantize any tensor to a
numpy array. The dequantization mirrors tqpipe's C reference (kernels/codec_ref.c, docs/CODECS.md)
operation by operation in float32, so the result is bit-for-bit what ``tqpipe export --dtype f32``
writes. Needs numpy, h5py and hdf5plugin (which provides the zstd filter, id 32015).

    import tqpipe_reader
    art = tqpipe_reader.open("runs/stories260k/artifact")
    for name in art.names():
        print(name, art.info(name)["codec"], art.info(name)["shape"])
    w = art.dequantize("model.layers.0.attention.wq.weight")   # float32, original shape
"""
import builtins
import json
import os

import numpy as np

try:  # registers the zstd filter (32015) with h5py's HDF5
    import hdf5plugin  # noqa: F401
except ImportError:  # pragma: no cover - reading zstd shards will fail with a clear h5py error
    hdf5plugin = None
import h5py

__all__ = ["open", "Artifact", "dequantize_parts", "FORMAT", "FORMAT_VERSION", "INDEX_NAME"]

FORMAT = "tqpipe-artifact"
FORMAT_VERSION = 1
INDEX_NAME = "model.tqa.index.json"
DEFAULT_GROUP = 128


class FormatError(Exception):
    """The directory is not a readable tqpipe artifact (missing index, wrong version, bad data)."""


# ------------------------------------------------------------------------------------------------
# codec names (kernels/codec.c tq_codec_parse)

def parse_codec(name):
    """(kind, bits, rbits) for a codec name: kind in tq, tqr, bin1, ter, rtn, int8, fp16, bf16, f32."""
    n = len(name)
    if n == 3 and name.startswith("tq") and name[2] in "1234":
        return "tq", int(name[2]), 0
    if n == 5 and name.startswith("tq") and name[2] in "1234" and name[3] == "r" and name[4] in "1234":
        return "tqr", int(name[2]), int(name[4])
    if name == "bin1":
        return "bin1", 1, 0
    if name == "ter":
        return "ter", 0, 0
    if n == 4 and name.startswith("rtn") and name[3] in "2345678":
        return "rtn", int(name[3]), 0
    if name in ("int8", "fp16", "bf16", "f32"):
        return name, 8 if name == "int8" else 0, 0
    raise FormatError("unknown codec %r (artifact written by a newer tqpipe?)" % name)


# ------------------------------------------------------------------------------------------------
# rotation (kernels/hadamard.h): column blocks, signs, fast Walsh-Hadamard transform

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix64(z):
    """splitmix64 finalizer on a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def rot_signs(seed, cols):
    """float32 ±1 per column: bit 63 of mix64(seed + golden * (j + 1)) set -> -1."""
    j = np.arange(1, cols + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + np.uint64(0x9E3779B97F4A7C15) * j
    bit = _mix64(z) >> np.uint64(63)
    return np.where(bit == 1, np.float32(-1.0), np.float32(1.0)).astype(np.float32)


def rot_seed2(seed):
    """Seed of the residual stage of tq{b}r{r}."""
    return int(_mix64(np.array([np.uint64(seed) ^ np.uint64(0xD1B54A32D192ED03)], dtype=np.uint64))[0])


def rot_blocks(cols, g):
    """[(start, size)]: floor(cols/g) blocks of g, then the tail as powers of two, largest first."""
    out = [(k * g, g) for k in range(cols // g)]
    s = (cols // g) * g
    tail = cols % g
    for bit in range(62, -1, -1):
        b = 1 << bit
        if tail & b:
            out.append((s, b))
            s += b
    return out


def rot_block_sizes(cols, g):
    """Distinct block sizes, descending: the order of the per-tensor codebooks."""
    sizes = [g] if cols >= g else []
    tail = cols % g
    sizes += [1 << bit for bit in range(30, -1, -1) if tail & (1 << bit)]
    return sizes


def _fwht_rows(x):
    """Unnormalized FWHT of every row of x (rows, d), float32, butterflies h = 1, 2, ..., d/2."""
    rows, d = x.shape
    h = 1
    while h < d:
        v = x.reshape(rows, d // (2 * h), 2, h)
        a = v[:, :, 0, :]
        b = v[:, :, 1, :]
        x = np.stack((a + b, a - b), axis=2).reshape(rows, d)
        h *= 2
    return x


def rot_inverse(y, g, signs):
    """Inverse rotation of every row of y (rows, cols) float32: per block FWHT * (1/sqrt(d)), then signs."""
    y = np.array(y, dtype=np.float32, copy=True)
    cols = y.shape[1]
    for s, d in rot_blocks(cols, g):
        blk = _fwht_rows(np.ascontiguousarray(y[:, s:s + d]))
        y[:, s:s + d] = blk * np.float32(1.0 / np.sqrt(np.float64(d)))
    return y * signs[np.newaxis, :]


# ------------------------------------------------------------------------------------------------
# packing (kernels/codec_internal.h)

def unpack_bits(rows_bytes, cols, b):
    """(rows, row_bytes) uint8 -> (rows, cols) uint8 codes; code i = bits [i*b, (i+1)*b), LSB first."""
    rows = rows_bytes.shape[0]
    if b == 8:
        return rows_bytes[:, :cols].copy()
    bits = np.unpackbits(rows_bytes, axis=1, bitorder="little")[:, :cols * b]
    bits = bits.reshape(rows, cols, b).astype(np.uint8)
    weights = (1 << np.arange(b, dtype=np.uint8)).astype(np.uint8)
    return (bits * weights).sum(axis=2, dtype=np.uint16).astype(np.uint8)


def unpack_trits(rows_bytes, cols):
    """(rows, ceil(cols/5)) uint8 -> (rows, cols) int8 in {-1, 0, 1}; base 3, least significant first."""
    v = rows_bytes.astype(np.int16)
    digits = []
    for _ in range(5):
        digits.append(v % 3)
        v = v // 3
    t = np.stack(digits, axis=2).reshape(rows_bytes.shape[0], -1)[:, :cols]
    return (t - 1).astype(np.int8)


def _f16(rows_bytes):
    """Little-endian fp16 words -> float32 (exact)."""
    return np.ascontiguousarray(rows_bytes).view("<f2").astype(np.float32)


# ------------------------------------------------------------------------------------------------
# dequantization (kernels/codec_ref.c tq_dequant_row), whole tensor at once, float32 throughout

def _expand_blocks(per_block, cols, g):
    """(rows, nblocks) -> (rows, cols): each rotation block's value repeated over its columns."""
    reps = [d for _, d in rot_blocks(cols, g)]
    return np.repeat(per_block, reps, axis=1)


def _tq_stage(codes_b, norms_b, cb, bits, rows, cols, g, seed):
    codes = unpack_bits(codes_b, cols, bits)
    sizes = rot_block_sizes(cols, g)
    n = 1 << bits
    cbs = np.asarray(cb, dtype=np.float32).reshape(len(sizes), n)
    norms = _expand_blocks(_f16(norms_b).reshape(rows, -1), cols, g)
    y = np.empty((rows, cols), dtype=np.float32)
    for s, d in rot_blocks(cols, g):
        book = cbs[sizes.index(d)]
        y[:, s:s + d] = norms[:, s:s + d] * book[codes[:, s:s + d]]
    return rot_inverse(y, g, rot_signs(seed, cols))


def dequantize_parts(codec, group, rows, cols, seed, parts):
    """Dequantize a tensor given its packed parts (dict name -> uint8 array of the part's bytes).
    Returns float32 (rows, cols), equal bit for bit to tq_dequantize_ref."""
    kind, bits, rbits = parse_codec(codec)
    g = group

    def rowpart(name):
        b = np.ascontiguousarray(parts[name]).view(np.uint8).reshape(-1)
        return b.reshape(rows, -1) if rows else b.reshape(0, 0)

    def flat(name):
        return np.ascontiguousarray(parts[name]).view(np.uint8).reshape(-1)

    if kind in ("tq", "tqr"):
        out = _tq_stage(rowpart("codes"), rowpart("norms"), flat("codebook").view("<f4"), bits, rows, cols, g, seed)
        if kind == "tqr":
            out2 = _tq_stage(rowpart("codes2"), rowpart("norms2"), flat("codebook2").view("<f4"), rbits, rows, cols,
                             g, rot_seed2(seed))
            out = out + out2
        return out
    if kind == "bin1":
        c = unpack_bits(rowpart("codes"), cols, 1)
        m = _expand_blocks(_f16(rowpart("scales")).reshape(rows, -1), cols, g)
        y = np.where(c != 0, m, -m).astype(np.float32)
        return rot_inverse(y, g, rot_signs(seed, cols))
    if kind == "ter":
        t = unpack_trits(rowpart("codes"), cols)
        sc = np.repeat(_f16(rowpart("scales")).reshape(rows, -1), g, axis=1)[:, :cols]
        return t.astype(np.float32) * sc
    if kind == "rtn":
        c = unpack_bits(rowpart("codes"), cols, bits)
        sc = np.repeat(_f16(rowpart("scales")).reshape(rows, -1), g, axis=1)[:, :cols]
        mn = np.repeat(_f16(rowpart("mins")).reshape(rows, -1), g, axis=1)[:, :cols]
        return mn + c.astype(np.float32) * sc
    if kind == "int8":
        c = rowpart("codes").view(np.int8).astype(np.float32)
        sc = rowpart("scales").view("<f4").reshape(rows, 1)
        return c * sc
    if kind == "fp16":
        return _f16(rowpart("values")).reshape(rows, cols)
    if kind == "bf16":
        u = np.ascontiguousarray(rowpart("values")).view("<u2").astype(np.uint32) << np.uint32(16)
        return u.view(np.float32).reshape(rows, cols)
    if kind == "f32":
        return np.ascontiguousarray(rowpart("values")).view("<f4").reshape(rows, cols).copy()
    raise FormatError("codec %r has no dequantizer" % codec)


# ------------------------------------------------------------------------------------------------
# the artifact

class Artifact:
    """A tqpipe artifact directory: the JSON index plus HDF5 shards (opened lazily, one at a time)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        ipath = os.path.join(self.path, INDEX_NAME)
        if not os.path.exists(ipath):
            raise FormatError("%s not found: %s is not a tqpipe artifact" % (ipath, self.path))
        with builtins.open(ipath, "r", encoding="utf-8") as f:
            self.index = json.load(f)
        if self.index.get("format") != FORMAT:
            raise FormatError("%s: not a tqpipe artifact index" % ipath)
        if self.index.get("format_version") != FORMAT_VERSION:
            raise FormatError("%s: format version %r, this reader reads %d" %
                              (ipath, self.index.get("format_version"), FORMAT_VERSION))
        self.tensors = self.index["tensors"]
        self.shards = [s["file"] for s in self.index["shards"]]
        self._h5 = None
        self._h5_shard = -1

    # metadata ------------------------------------------------------------------------------------
    def names(self):
        """Tensor names, sorted."""
        return sorted(self.tensors)

    def info(self, name):
        """Index entry: shard, codec, group_size, dtype, shape, rows, cols, role, seed, bytes, checksum."""
        return self.tensors[name]

    @property
    def config(self):
        """The model's config.json as a dict (None when not recorded)."""
        txt = self.index.get("config_json") or ""
        return json.loads(txt) if txt else None

    @property
    def metrics(self):
        txt = self.index.get("metrics") or ""
        return json.loads(txt) if txt else None

    @property
    def plan(self):
        return self.index.get("plan") or ""

    # data ------------------------------------------------------------------------------------------
    def _shard(self, k):
        if self._h5_shard != k:
            self.close()
            self._h5 = h5py.File(os.path.join(self.path, self.shards[k]), "r")
            self._h5_shard = k
            if self._h5.attrs.get("format_version") != FORMAT_VERSION:
                raise FormatError("%s: wrong format version" % self.shards[k])
        return self._h5

    def read_parts(self, name):
        """dict part name -> numpy array as stored (codes uint8, norms float16, ...)."""
        t = self.tensors[name]
        grp = self._shard(t["shard"])["tensors"][name]
        return {p: grp[p][()] for p in grp.keys()}

    def checksum(self, name):
        """XXH3-64 of the parts in codec order (needs the optional `xxhash` package), hex string."""
        import xxhash  # optional dependency
        t = self.tensors[name]
        grp = self._shard(t["shard"])["tensors"][name]
        h = xxhash.xxh3_64()
        for p in _part_order(t["codec"]):
            h.update(np.ascontiguousarray(grp[p][()]).tobytes())
        return h.hexdigest()

    def dequantize(self, name, dtype=np.float32):
        """Dequantized tensor in its original shape, float32 by default (bit-exact with tqpipe)."""
        t = self.tensors[name]
        out = dequantize_parts(t["codec"], t["group_size"], t["rows"], t["cols"], int(t["seed"], 16),
                               self.read_parts(name))
        out = out.reshape(t["shape"]) if t["shape"] else out.reshape(())
        return out if dtype == np.float32 else out.astype(dtype)

    def close(self):
        if self._h5 is not None:
            self._h5.close()
        self._h5 = None
        self._h5_shard = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __iter__(self):
        return iter(self.names())

    def __len__(self):
        return len(self.tensors)


def _part_order(codec):
    kind = parse_codec(codec)[0]
    return {
        "tq": ["codes", "norms", "codebook"],
        "tqr": ["codes", "norms", "codebook", "codes2", "norms2", "codebook2"],
        "bin1": ["codes", "scales"],
        "ter": ["codes", "scales"],
        "rtn": ["codes", "scales", "mins"],
        "int8": ["codes", "scales"],
    }.get(kind, ["values"])


def open(path):  # noqa: A001 - the natural name for the entry point
    """Open an artifact directory."""
    return Artifact(path)
