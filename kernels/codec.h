/* codec.h — the weight codecs: names, exact byte counts, the packed layout and the quantize /
 * dequantize entry points (CPU reference here; CUDA versions produce the same bytes).
 *
 * Names used everywhere (job files, plans, artifacts):
 *   tq1..tq4        randomized Hadamard rotation per group + one fp16 norm per group + Lloyd-Max codes
 *   tq{b}r{r}       two TurboQuant stages: tq{b}, then tq{r} on the residual with its own seed and norms
 *   bin1            sign bits after rotation + one fp16 scale per group
 *   ter             ternary {-s,0,+s} per group (absmean threshold), 5 trits per byte
 *   rtn2..rtn8      asymmetric round-to-nearest per group, fp16 scale + fp16 min (like Q4_1)
 *   int8            symmetric int8 per output channel (row), one f32 scale per row
 *   fp16, bf16, f32 stored as is
 * A codec instance is (name, group); group g in {64, 128, 256} runs along the input dimension (cols).
 * The exact byte layout of every codec (what CUDA kernels and the Python reader implement) is in
 * docs/CODECS.md; the CPU reference is kernels/codec_ref.c (+ hadamard.c, lloydmax.c).
 *
 * Packed layout: a quantized tensor is a small set of named parts ("codes", "norms", ...). Every part
 * that depends on the weights is laid out row by row with a fixed byte count per row (row_bytes), so
 * a slice of rows [r0, r1) is the contiguous byte range [r0*row_bytes, r1*row_bytes) of each part,
 * and slices quantized separately concatenate to the whole tensor's bytes. Parts with row_bytes == 0
 * are per tensor (e.g. the codebook) and identical for every slice.
 * The rotation depends only on (seed, column), never on the row, so W·Rᵀ is one orthogonal map of
 * the input dimension (what Hessian compensation in the rotated domain needs). */
#ifndef TQ_CODEC_H
#define TQ_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef enum {
    TQ_CODEC_INVALID = 0,
    TQ_CODEC_TQ,    /* tq1..tq4 */
    TQ_CODEC_TQR,   /* tq{b}r{r} */
    TQ_CODEC_BIN1,
    TQ_CODEC_TER,
    TQ_CODEC_RTN,   /* rtn2..rtn8 */
    TQ_CODEC_INT8,
    TQ_CODEC_FP16,
    TQ_CODEC_BF16,
    TQ_CODEC_F32
} tq_codec_kind;

typedef struct {
    char name[16];      /* canonical name, e.g. "tq4r4" */
    tq_codec_kind kind;
    int bits;           /* first-stage bits (tq, rtn), 1 for bin1, 0 for ter/fp */
    int rbits;          /* residual-stage bits (tqr), else 0 */
    int group;          /* group size along cols */
} tq_codec;

#define TQ_CODEC_DEFAULT_GROUP 128

/* Parse a codec name; group 0 means TQ_CODEC_DEFAULT_GROUP. Unknown name or group -> TQ_ERR_ARG
 * with a message listing the known codecs. */
tq_status tq_codec_parse(const char* name, int group, tq_codec* out);
/* All codec names tqpipe knows, NULL-terminated. */
const char* const* tq_codec_names(void);

#define TQ_QT_MAX_PARTS 6

typedef struct {
    char name[16];      /* dataset name in artifacts: "codes", "norms", "codes2", "norms2", "scales", ... */
    int elem_size;      /* 1 = raw bytes, 2 = fp16/bf16 words, 4 = fp32 */
    size_t row_bytes;   /* bytes per tensor row; 0 for per-tensor parts */
    size_t bytes;       /* total bytes of this part */
    uint8_t* data;
} tq_qpart;

typedef struct {
    tq_codec codec;
    int64_t rows, cols;
    uint64_t seed;      /* rotation seed, from tq_tensor_seed(job seed, tensor name) */
    int nparts;
    tq_qpart part[TQ_QT_MAX_PARTS];
    int flags;          /* quantizer options (TQ_QFLAG_*), 0 = defaults; never changes the layout */
} tq_qtensor;

/* tq/tqr: store the plain group L2 norm instead of the least-squares scale <y,c>/<c,c> (the default,
 * lower error). Only the quantizer differs; dequantization is the same. */
#define TQ_QFLAG_PLAIN_NORM 1

/* Exact bytes stored for a rows x cols tensor: every part, codebook and padding included. */
size_t tq_codec_bytes(const tq_codec* c, int64_t rows, int64_t cols);
/* Bits per weight = 8 * tq_codec_bytes / (rows * cols). */
double tq_codec_bpw(const tq_codec* c, int64_t rows, int64_t cols);

/* Deterministic per-tensor seed from the job seed and the tensor's name. */
uint64_t tq_tensor_seed(uint64_t job_seed, const char* tensor_name);

/* Describe and allocate the parts for rows x cols (data zeroed). tq_qtensor_release frees them. */
tq_status tq_qtensor_alloc(tq_qtensor* q, const tq_codec* c, int64_t rows, int64_t cols, uint64_t seed);
/* Describe the parts without allocating (data = NULL): what readers use to check sizes. */
tq_status tq_qtensor_layout(tq_qtensor* q, const tq_codec* c, int64_t rows, int64_t cols, uint64_t seed);
void tq_qtensor_release(tq_qtensor* q);
const tq_qpart* tq_qtensor_part(const tq_qtensor* q, const char* name);

/* Quantize w [rows x cols, row-major fp32] into q (allocated by tq_qtensor_alloc). CPU reference,
 * multi-threaded over rows (tq_codec_set_threads; the bytes never depend on the thread count).
 * `what` names the tensor in error messages. NaN/Inf in w -> TQ_ERR_NUMERIC naming tensor and row
 * (row numbers count from the first row of w, i.e. within the slice). A group norm/scale beyond the
 * fp16 range -> TQ_ERR_NUMERIC (keep such a tensor bf16/int8). Writes the per-tensor parts too. */
tq_status tq_quantize_ref(const float* w, tq_qtensor* q, const char* what);
/* Dequantize q into out [rows x cols fp32]. Codebooks are read from q's parts. A norm/scale part
 * holding fp16 NaN/Inf -> TQ_ERR_CORRUPT. */
tq_status tq_dequantize_ref(const tq_qtensor* q, float* out);

/* GPU versions (same bytes as the reference, see kernels/<name>.cu). TQ_ERR_NOGPU when the build has no
 * CUDA or no device is present. Host pointers in and out; staging is internal. */
int tq_gpu_available(void);
tq_status tq_quantize_gpu(const float* w, tq_qtensor* q, const char* what);
tq_status tq_dequantize_gpu(const tq_qtensor* q, float* out);

/* Pick the GPU when present, else the CPU reference. */
tq_status tq_quantize(const float* w, tq_qtensor* q, const char* what);
tq_status tq_dequantize(const tq_qtensor* q, float* out);

/* ---- additions (codec helper) ---------------------------------------------------------------------
 * Dequantize rows [row0, row0 + nrows) of q into out [nrows x cols] (fp32 / bf16 bits). CPU reference,
 * multi-threaded over rows. What streaming readers (inference, export, validation) use. */
tq_status tq_dequantize_rows_ref(const tq_qtensor* q, int64_t row0, int64_t nrows, float* out);
tq_status tq_dequantize_bf16_ref(const tq_qtensor* q, uint16_t* out);
/* Dispatching bf16 version (GPU when present). */
tq_status tq_dequantize_bf16(const tq_qtensor* q, uint16_t* out);
/* Threads used by the CPU reference: TQ_THREADS if set, else the online CPU count (bytes never depend
 * on it). 1 forces the single-threaded path. */
void tq_codec_set_threads(int n);
int tq_codec_threads(void);
/* Human-readable description of a codec's parts, e.g. "codes[row 68 B] norms[row 8 B] codebook[256 B]". */
void tq_codec_describe(const tq_qtensor* q, char* buf, size_t cap);

#endif
