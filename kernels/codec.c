/* codec.c — codec names, parsing, the packed layout (parts and their exact byte counts), per-tensor
 * seeds, allocation and the CPU/GPU dispatch. The per-row quantize/dequantize math is in codec_ref.c.
 * The layout written here is the one docs/CODECS.md specifies; keep the two in step. */
#include "codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"    // defines: tq_f32_to_bf16
#include "hadamard.h" // defines: tq_rot_nblocks, tq_rot_block_sizes
#include "hash.h"     // defines: tq_xxh64

// ------------------------------------------------------------------------------------------------
// names

static const char* const tq_names[] = {
    "tq1", "tq2", "tq3", "tq4",
    "tq1r1", "tq2r1", "tq2r2", "tq3r1", "tq3r2", "tq3r3", "tq4r1", "tq4r2", "tq4r3", "tq4r4",
    "bin1", "ter",
    "rtn2", "rtn3", "rtn4", "rtn5", "rtn6", "rtn7", "rtn8",
    "int8", "fp16", "bf16", "f32", NULL};

const char* const* tq_codec_names(void)
{
    return tq_names;
}

static tq_status tq_codec_bad_name(const char* name)
{
    return tq_fail(TQ_ERR_ARG,
                   "unknown codec '%s': known codecs are tq1..tq4, tq{b}r{r} (b, r in 1..4, e.g. tq4r4), "
                   "bin1, ter, rtn2..rtn8, int8, fp16, bf16, f32",
                   name ? name : "(null)");
}

tq_status tq_codec_parse(const char* name, int group, tq_codec* out)
{
    tq_codec c;
    memset(&c, 0, sizeof c);
    if (!name || !*name || strlen(name) >= sizeof c.name) return tq_codec_bad_name(name);
    if (group == 0) group = TQ_CODEC_DEFAULT_GROUP;
    if (group != 64 && group != 128 && group != 256)
        return tq_fail(TQ_ERR_ARG, "codec '%s': group %d is not supported (use 64, 128 or 256)", name, group);
    size_t n = strlen(name);
    if (n == 3 && !strncmp(name, "tq", 2) && name[2] >= '1' && name[2] <= '4') {
        c.kind = TQ_CODEC_TQ;
        c.bits = name[2] - '0';
    } else if (n == 5 && !strncmp(name, "tq", 2) && name[2] >= '1' && name[2] <= '4' && name[3] == 'r' &&
               name[4] >= '1' && name[4] <= '4') {
        c.kind = TQ_CODEC_TQR;
        c.bits = name[2] - '0';
        c.rbits = name[4] - '0';
    } else if (!strcmp(name, "bin1")) {
        c.kind = TQ_CODEC_BIN1;
        c.bits = 1;
    } else if (!strcmp(name, "ter")) {
        c.kind = TQ_CODEC_TER;
    } else if (n == 4 && !strncmp(name, "rtn", 3) && name[3] >= '2' && name[3] <= '8') {
        c.kind = TQ_CODEC_RTN;
        c.bits = name[3] - '0';
    } else if (!strcmp(name, "int8")) {
        c.kind = TQ_CODEC_INT8;
        c.bits = 8;
    } else if (!strcmp(name, "fp16")) {
        c.kind = TQ_CODEC_FP16;
    } else if (!strcmp(name, "bf16")) {
        c.kind = TQ_CODEC_BF16;
    } else if (!strcmp(name, "f32")) {
        c.kind = TQ_CODEC_F32;
    } else {
        return tq_codec_bad_name(name);
    }
    snprintf(c.name, sizeof c.name, "%s", name);
    c.group = group;
    *out = c;
    return TQ_OK;
}

uint64_t tq_tensor_seed(uint64_t job_seed, const char* tensor_name)
{
    return tq_xxh64(tensor_name, strlen(tensor_name), job_seed);
}

// ------------------------------------------------------------------------------------------------
// layout

static void tq_set_part(tq_qtensor* q, const char* name, int elem, size_t row_bytes, size_t total)
{
    tq_qpart* p = &q->part[q->nparts++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->elem_size = elem;
    p->row_bytes = row_bytes;
    p->bytes = total;
}

static size_t tq_bits_row_bytes(int64_t cols, int b)
{
    return (size_t)((cols * b + 7) / 8);
}

tq_status tq_qtensor_layout(tq_qtensor* q, const tq_codec* c, int64_t rows, int64_t cols, uint64_t seed)
{
    if (!q || !c) return tq_fail(TQ_ERR_ARG, "tq_qtensor_layout: NULL argument");
    if (rows < 0 || cols < 1)
        return tq_fail(TQ_ERR_ARG, "codec %s: bad shape [%lld, %lld] (rows >= 0, cols >= 1)", c->name,
                       (long long)rows, (long long)cols);
    int g = c->group;
    if (g != 64 && g != 128 && g != 256)
        return tq_fail(TQ_ERR_ARG, "codec %s: group %d is not supported (use 64, 128 or 256)", c->name, g);
    memset(q, 0, sizeof *q);
    q->codec = *c;
    q->rows = rows;
    q->cols = cols;
    q->seed = seed;
    size_t R = (size_t)rows;
    int64_t nb = tq_rot_nblocks(cols, g);
    int64_t ng = (cols + g - 1) / g;
    int sizes[16];
    int ndist = tq_rot_block_sizes(cols, g, sizes);
    switch (c->kind) {
    case TQ_CODEC_TQ:
    case TQ_CODEC_TQR: {
        size_t rb = tq_bits_row_bytes(cols, c->bits);
        tq_set_part(q, "codes", 1, rb, rb * R);
        tq_set_part(q, "norms", 2, 2 * (size_t)nb, 2 * (size_t)nb * R);
        tq_set_part(q, "codebook", 4, 0, 4 * ((size_t)1 << c->bits) * (size_t)ndist);
        if (c->kind == TQ_CODEC_TQR) {
            size_t rb2 = tq_bits_row_bytes(cols, c->rbits);
            tq_set_part(q, "codes2", 1, rb2, rb2 * R);
            tq_set_part(q, "norms2", 2, 2 * (size_t)nb, 2 * (size_t)nb * R);
            tq_set_part(q, "codebook2", 4, 0, 4 * ((size_t)1 << c->rbits) * (size_t)ndist);
        }
        break;
    }
    case TQ_CODEC_BIN1: {
        size_t rb = tq_bits_row_bytes(cols, 1);
        tq_set_part(q, "codes", 1, rb, rb * R);
        tq_set_part(q, "scales", 2, 2 * (size_t)nb, 2 * (size_t)nb * R);
        break;
    }
    case TQ_CODEC_TER: {
        size_t rb = (size_t)((cols + 4) / 5);
        tq_set_part(q, "codes", 1, rb, rb * R);
        tq_set_part(q, "scales", 2, 2 * (size_t)ng, 2 * (size_t)ng * R);
        break;
    }
    case TQ_CODEC_RTN: {
        size_t rb = tq_bits_row_bytes(cols, c->bits);
        tq_set_part(q, "codes", 1, rb, rb * R);
        tq_set_part(q, "scales", 2, 2 * (size_t)ng, 2 * (size_t)ng * R);
        tq_set_part(q, "mins", 2, 2 * (size_t)ng, 2 * (size_t)ng * R);
        break;
    }
    case TQ_CODEC_INT8:
        tq_set_part(q, "codes", 1, (size_t)cols, (size_t)cols * R);
        tq_set_part(q, "scales", 4, 4, 4 * R);
        break;
    case TQ_CODEC_FP16:
    case TQ_CODEC_BF16:
        tq_set_part(q, "values", 2, 2 * (size_t)cols, 2 * (size_t)cols * R);
        break;
    case TQ_CODEC_F32:
        tq_set_part(q, "values", 4, 4 * (size_t)cols, 4 * (size_t)cols * R);
        break;
    default:
        return tq_fail(TQ_ERR_ARG, "codec '%s': invalid kind (parse it with tq_codec_parse)", c->name);
    }
    return TQ_OK;
}

size_t tq_codec_bytes(const tq_codec* c, int64_t rows, int64_t cols)
{
    tq_qtensor q;
    if (tq_qtensor_layout(&q, c, rows, cols, 0) != TQ_OK) return 0;
    size_t s = 0;
    for (int i = 0; i < q.nparts; i++) s += q.part[i].bytes;
    return s;
}

double tq_codec_bpw(const tq_codec* c, int64_t rows, int64_t cols)
{
    if (rows <= 0 || cols <= 0) return 0.0;
    return 8.0 * (double)tq_codec_bytes(c, rows, cols) / ((double)rows * (double)cols);
}

tq_status tq_qtensor_alloc(tq_qtensor* q, const tq_codec* c, int64_t rows, int64_t cols, uint64_t seed)
{
    TQ_FORWARD(tq_qtensor_layout(q, c, rows, cols, seed));
    for (int i = 0; i < q->nparts; i++) {
        q->part[i].data = calloc(q->part[i].bytes ? q->part[i].bytes : 1, 1);
        if (!q->part[i].data) {
            size_t want = q->part[i].bytes;
            char pname[16];
            snprintf(pname, sizeof pname, "%s", q->part[i].name);
            tq_qtensor_release(q);
            return tq_fail(TQ_ERR_NOMEM, "codec %s: cannot allocate %zu bytes for part '%s' of a [%lld, %lld] tensor",
                           c->name, want, pname, (long long)rows, (long long)cols);
        }
    }
    return TQ_OK;
}

void tq_qtensor_release(tq_qtensor* q)
{
    if (!q) return;
    for (int i = 0; i < q->nparts && i < TQ_QT_MAX_PARTS; i++) {
        free(q->part[i].data);
        q->part[i].data = NULL;
    }
}

const tq_qpart* tq_qtensor_part(const tq_qtensor* q, const char* name)
{
    for (int i = 0; i < q->nparts; i++)
        if (!strcmp(q->part[i].name, name)) return &q->part[i];
    return NULL;
}

void tq_codec_describe(const tq_qtensor* q, char* buf, size_t cap)
{
    size_t off = 0;
    if (cap) buf[0] = 0;
    for (int i = 0; i < q->nparts && off < cap; i++) {
        const tq_qpart* p = &q->part[i];
        int n;
        if (p->row_bytes)
            n = snprintf(buf + off, cap - off, "%s%s[%zu B/row, elem %d]", i ? " " : "", p->name, p->row_bytes,
                         p->elem_size);
        else
            n = snprintf(buf + off, cap - off, "%s%s[%zu B/tensor, elem %d]", i ? " " : "", p->name, p->bytes,
                         p->elem_size);
        if (n < 0) break;
        off += (size_t)n;
    }
}

// ------------------------------------------------------------------------------------------------
// dispatch

tq_status tq_quantize(const float* w, tq_qtensor* q, const char* what)
{
    if (tq_gpu_available()) return tq_quantize_gpu(w, q, what);
    return tq_quantize_ref(w, q, what);
}

tq_status tq_dequantize(const tq_qtensor* q, float* out)
{
    if (tq_gpu_available()) return tq_dequantize_gpu(q, out);
    return tq_dequantize_ref(q, out);
}

tq_status tq_dequantize_bf16(const tq_qtensor* q, uint16_t* out)
{
    /* the GPU interface dequantizes to fp32; bf16 rounding is done here row block by row block */
    if (!tq_gpu_available()) return tq_dequantize_bf16_ref(q, out);
    size_t n = (size_t)q->rows * (size_t)q->cols;
    float* tmp = malloc(n ? n * sizeof(float) : 1);
    if (!tmp) return tq_dequantize_bf16_ref(q, out);
    tq_status rc = tq_dequantize_gpu(q, tmp);
    if (rc == TQ_OK)
        for (size_t i = 0; i < n; i++) out[i] = tq_f32_to_bf16(tmp[i]);
    free(tmp);
    return rc;
}
