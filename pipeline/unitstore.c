/* unitstore.c — encode / decode of a quantize unit's packed slice (format in unitstore.h). */
#include "unitstore.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stage_fmt.h" /* defines: tq_fmt */

tq_status tq_unitrec_header(const tq_qtensor* q, int64_t row0, int64_t tensor_rows, uint8_t* dst, size_t cap,
                            size_t* hdr_len)
{
    char hdr[1024];
    int h = tq_fmt(hdr, sizeof hdr, "codec %s %d\nrows %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 "\nseed %016" PRIx64 "\nparts %d\n",
                   q->codec.name, q->codec.group, row0, q->rows, tensor_rows, q->cols, q->seed, q->nparts);
    for (int i = 0; i < q->nparts && h >= 0; i++) {
        int n = tq_fmt(hdr + h, sizeof hdr - (size_t)h, "%s %d %zu %zu\n", q->part[i].name, q->part[i].elem_size,
                       q->part[i].row_bytes, q->part[i].bytes);
        h = n < 0 ? -1 : h + n;
    }
    if (h < 0) return tq_fail(TQ_ERR_ARG, "unit header too long");
    *hdr_len = 8 + (size_t)h;
    if (!dst) return TQ_OK;
    if (cap < 8 + (size_t)h) return tq_fail(TQ_ERR_ARG, "unit header: %zu bytes needed, %zu available", 8 + (size_t)h, cap);
    memcpy(dst, "TQU1", 4);
    uint32_t hl = (uint32_t)h;
    for (int i = 0; i < 4; i++) dst[4 + i] = (uint8_t)(hl >> (8 * i));
    memcpy(dst + 8, hdr, (size_t)h);
    return TQ_OK;
}

tq_status tq_unitrec_encode(const tq_qtensor* q, int64_t row0, int64_t tensor_rows, uint8_t** out, size_t* len)
{
    size_t hl = 0, data = 0;
    TQ_FORWARD(tq_unitrec_header(q, row0, tensor_rows, NULL, 0, &hl));
    for (int i = 0; i < q->nparts; i++) data += q->part[i].bytes;
    size_t total = hl + data;
    uint8_t* b = malloc(total);
    if (!b) return tq_fail(TQ_ERR_NOMEM, "out of memory (%zu bytes) for a unit record", total);
    tq_status rc = tq_unitrec_header(q, row0, tensor_rows, b, total, &hl);
    if (rc != TQ_OK) {
        free(b);
        return rc;
    }
    size_t o = hl;
    for (int i = 0; i < q->nparts; i++) {
        if (q->part[i].bytes) memcpy(b + o, q->part[i].data, q->part[i].bytes);
        o += q->part[i].bytes;
    }
    *out = b;
    *len = total;
    return TQ_OK;
}

tq_status tq_unitrec_decode_into(const uint8_t* rec, size_t len, tq_qtensor* full, int64_t* row0, int64_t* nrows,
                                 const char* what)
{
    if (len < 8 || memcmp(rec, "TQU1", 4)) return tq_fail(TQ_ERR_CORRUPT, "%s: not a unit record (bad magic)", what);
    uint32_t hl = (uint32_t)rec[4] | (uint32_t)rec[5] << 8 | (uint32_t)rec[6] << 16 | (uint32_t)rec[7] << 24;
    if (hl >= 1024 || 8 + (size_t)hl > len) return tq_fail(TQ_ERR_CORRUPT, "%s: unit record header truncated", what);
    char hdr[1024];
    memcpy(hdr, rec + 8, hl);
    hdr[hl] = '\0';
    char cname[32];
    int group, np;
    long long r0, nr, tr, cols;
    unsigned long long seed;
    int off = 0;
    if (sscanf(hdr, "codec %31s %d\nrows %lld %lld %lld %lld\nseed %llx\nparts %d\n%n", cname, &group, &r0, &nr, &tr,
               &cols, &seed, &np, &off) != 8)
        return tq_fail(TQ_ERR_CORRUPT, "%s: malformed unit record header", what);
    if (strcmp(cname, full->codec.name) || group != full->codec.group || cols != full->cols || tr != full->rows ||
        (uint64_t)seed != full->seed || np != full->nparts || r0 < 0 || nr <= 0 || r0 + nr > full->rows)
        return tq_fail(TQ_ERR_CORRUPT, "%s: unit record (%s g%d rows %lld+%lld of %lld, cols %lld) does not match the tensor (%s g%d, %" PRId64 " x %" PRId64 ")",
                       what, cname, group, r0, nr, tr, cols, full->codec.name, full->codec.group, full->rows, full->cols);
    size_t o = 8 + hl;
    const char* p = hdr + off;
    for (int i = 0; i < np; i++) {
        char pn[32];
        int es, used = 0;
        size_t rb, bytes;
        if (sscanf(p, "%31s %d %zu %zu\n%n", pn, &es, &rb, &bytes, &used) != 4)
            return tq_fail(TQ_ERR_CORRUPT, "%s: malformed part line %d", what, i);
        p += used;
        tq_qpart* fp = &full->part[i];
        size_t want = rb ? rb * (size_t)nr : fp->bytes;
        if (strcmp(pn, fp->name) || rb != fp->row_bytes || bytes != want || o + bytes > len)
            return tq_fail(TQ_ERR_CORRUPT, "%s: part %s (%zu bytes, %zu per row) does not match the tensor's part %s (%zu per row)",
                           what, pn, bytes, rb, fp->name, fp->row_bytes);
        if (rb) memcpy(fp->data + (size_t)r0 * rb, rec + o, bytes);
        else if (bytes) memcpy(fp->data, rec + o, bytes);
        o += bytes;
    }
    if (o != len) return tq_fail(TQ_ERR_CORRUPT, "%s: %zu trailing bytes in the unit record", what, len - o);
    *row0 = r0;
    *nrows = nr;
    return TQ_OK;
}
