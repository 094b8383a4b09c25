/* sensitivity.c — the sensitivity table (TSV read/write), codec labels, Ω = tr(ΔW·H·ΔWᵀ), and the
 * per-tensor measurement (quantize plainly or with GPTQ, dequantize, Ω, exact bytes). Format: see
 * sensitivity.h. */
#include "sensitivity.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>  /* defines: cblas_dgemm */

#include "fileio.h" /* defines: tq_read_file, tq_write_file_atomic */
#include "linalg_gpu.h" /* defines: tq_linalg_use_gpu, tq_gptq_quantize_gpu (helper gpu7) */

// ------------------------------------------------------------------------------------------------
// codec labels

tq_status tq_codec_label_parse(const char* label, tq_codec* out)
{
    if (!label || !out) return tq_fail(TQ_ERR_ARG, "codec label: NULL argument");
    char name[TQ_CODEC_LABEL];
    size_t l = strlen(label);
    if (l == 0 || l >= sizeof name) return tq_fail(TQ_ERR_ARG, "codec label '%.40s': empty or too long", label);
    memcpy(name, label, l + 1);
    int group = 0;
    char* colon = strchr(name, ':');
    if (colon) {
        *colon = 0;
        char* end = NULL;
        if (colon[1] != 'g') return tq_fail(TQ_ERR_ARG, "codec label '%s': expected NAME or NAME:g<GROUP>", label);
        errno = 0;
        long g = strtol(colon + 2, &end, 10);
        if (errno || end == colon + 2 || *end || g <= 0 || g > 1 << 20)
            return tq_fail(TQ_ERR_ARG, "codec label '%s': bad group after ':g'", label);
        group = (int)g;
    }
    return tq_codec_parse(name, group, out);
}

void tq_codec_label(const tq_codec* c, char out[TQ_CODEC_LABEL])
{
    if (c->group == TQ_CODEC_DEFAULT_GROUP || c->group == 0)
        snprintf(out, TQ_CODEC_LABEL, "%s", c->name);
    else
        snprintf(out, TQ_CODEC_LABEL, "%.15s:g%d", c->name, c->group);
}

// ------------------------------------------------------------------------------------------------
// table

tq_status tq_sens_table_create(tq_sens_table** out)
{
    if (!out) return tq_fail(TQ_ERR_ARG, "sensitivity table: NULL argument");
    *out = calloc(1, sizeof **out);
    return *out ? TQ_OK : tq_fail(TQ_ERR_NOMEM, "sensitivity table: out of memory");
}

void tq_sens_table_free(tq_sens_table** pt)
{
    if (!pt || !*pt) return;
    free((*pt)->rows);
    free(*pt);
    *pt = NULL;
}

tq_status tq_sens_table_add(tq_sens_table* t, const tq_sens_row* r)
{
    if (!t || !r) return tq_fail(TQ_ERR_ARG, "sensitivity table: NULL argument");
    if (t->n == t->cap) {
        int64_t nc = t->cap ? 2 * t->cap : 256;
        tq_sens_row* nr = realloc(t->rows, (size_t)nc * sizeof *nr);
        if (!nr) return tq_fail(TQ_ERR_NOMEM, "sensitivity table: out of memory (%lld rows)", (long long)nc);
        t->rows = nr;
        t->cap = nc;
    }
    t->rows[t->n++] = *r;
    return TQ_OK;
}

static int name_cmp(const void* a, const void* b)
{
    return strcmp(((const tq_sens_row*)*(const tq_sens_row* const*)a)->tensor,
                  ((const tq_sens_row*)*(const tq_sens_row* const*)b)->tensor);
}

int64_t tq_sens_table_weights(const tq_sens_table* t)
{
    if (!t || t->n == 0) return 0;
    const tq_sens_row** r = malloc((size_t)t->n * sizeof *r);
    if (!r) return -1;
    for (int64_t i = 0; i < t->n; i++) r[i] = &t->rows[i];
    qsort(r, (size_t)t->n, sizeof *r, name_cmp);
    int64_t w = 0;
    for (int64_t i = 0; i < t->n; i++)
        if (i == 0 || strcmp(r[i]->tensor, r[i - 1]->tensor)) w += r[i]->rows * r[i]->cols;
    free(r);
    return w;
}

static const char* const k_header = "tensor\trole\trows\tcols\tcodec\tbytes\tomega";

tq_status tq_sens_table_parse(const char* text, size_t len, const char* what, tq_sens_table** out)
{
    if (!text || !out) return tq_fail(TQ_ERR_ARG, "sensitivity table: NULL argument");
    if (!what) what = "sensitivity table";
    *out = NULL;
    tq_sens_table* t = NULL;
    TQ_FORWARD(tq_sens_table_create(&t));
    tq_status rc = TQ_OK;
    size_t pos = 0;
    int line = 0, header = 0;
    while (pos < len) {
        line++;
        size_t e = pos;
        while (e < len && text[e] != '\n') e++;
        size_t l = e - pos;
        char buf[1024];
        TQ_GOTO_FAIL(l >= sizeof buf, TQ_ERR_FORMAT, out, "%s line %d: line too long", what, line);
        memcpy(buf, text + pos, l);
        buf[l] = 0;
        if (l && buf[l - 1] == '\r') buf[--l] = 0;
        pos = e + 1;
        if (l == 0 || buf[0] == '#') continue;
        if (!header) {
            TQ_GOTO_FAIL(strcmp(buf, k_header) != 0, TQ_ERR_FORMAT, out,
                         "%s line %d: expected the header line 'tensor<TAB>role<TAB>rows<TAB>cols<TAB>codec<TAB>bytes<TAB>omega'",
                         what, line);
            header = 1;
            continue;
        }
        char* f[8];
        int nf = 0;
        char* s = buf;
        for (;;) {
            if (nf < 8) f[nf] = s;
            nf++;
            char* tab = strchr(s, '\t');
            if (!tab) break;
            *tab = 0;
            s = tab + 1;
        }
        TQ_GOTO_FAIL(nf != 7, TQ_ERR_FORMAT, out, "%s line %d: expected 7 tab-separated fields, found %d", what, line, nf);
        tq_sens_row r;
        memset(&r, 0, sizeof r);
        TQ_GOTO_FAIL(!f[0][0] || strlen(f[0]) >= sizeof r.tensor, TQ_ERR_FORMAT, out, "%s line %d: bad tensor name",
                     what, line);
        TQ_GOTO_FAIL(!f[1][0] || strlen(f[1]) >= sizeof r.role, TQ_ERR_FORMAT, out, "%s line %d: bad role", what, line);
        TQ_GOTO_FAIL(!f[4][0] || strlen(f[4]) >= sizeof r.codec, TQ_ERR_FORMAT, out, "%s line %d: bad codec", what,
                     line);
        snprintf(r.tensor, sizeof r.tensor, "%s", f[0]);
        snprintf(r.role, sizeof r.role, "%s", f[1]);
        snprintf(r.codec, sizeof r.codec, "%s", f[4]);
        char* end;
        errno = 0;
        long long rows = strtoll(f[2], &end, 10);
        TQ_GOTO_FAIL(errno || end == f[2] || *end || rows <= 0, TQ_ERR_FORMAT, out, "%s line %d: bad rows '%s'", what,
                     line, f[2]);
        errno = 0;
        long long cols = strtoll(f[3], &end, 10);
        TQ_GOTO_FAIL(errno || end == f[3] || *end || cols <= 0, TQ_ERR_FORMAT, out, "%s line %d: bad cols '%s'", what,
                     line, f[3]);
        errno = 0;
        unsigned long long by = strtoull(f[5], &end, 10);
        TQ_GOTO_FAIL(errno || end == f[5] || *end || f[5][0] == '-', TQ_ERR_FORMAT, out, "%s line %d: bad bytes '%s'",
                     what, line, f[5]);
        errno = 0;
        double om = strtod(f[6], &end);
        TQ_GOTO_FAIL(errno || end == f[6] || *end || !(om >= 0) || isinf(om), TQ_ERR_FORMAT, out,
                     "%s line %d: bad omega '%s' (a finite number >= 0)", what, line, f[6]);
        r.rows = rows;
        r.cols = cols;
        r.bytes = by;
        r.omega = om;
        TQ_CHECK_GOTO(tq_sens_table_add(t, &r), out);
    }
    TQ_GOTO_FAIL(!header, TQ_ERR_FORMAT, out, "%s: no header line: not a sensitivity table", what);
    *out = t;
    t = NULL;
out:
    tq_sens_table_free(&t);
    return rc;
}

tq_status tq_sens_table_load(const char* path, tq_sens_table** out)
{
    char* text = NULL;
    size_t len = 0;
    TQ_FORWARD(tq_read_file(path, &text, &len));
    tq_status rc = tq_sens_table_parse(text, len, path, out);
    free(text);
    return rc;
}

tq_status tq_sens_table_format(const tq_sens_table* t, char** out, size_t* len)
{
    if (!t || !out) return tq_fail(TQ_ERR_ARG, "sensitivity table: NULL argument");
    size_t cap = 128 + (size_t)t->n * (TQ_MAX_NAME + 160);
    char* b = malloc(cap);
    if (!b) return tq_fail(TQ_ERR_NOMEM, "sensitivity table: out of memory");
    size_t n = (size_t)snprintf(b, cap, "# tqpipe sensitivity table v1\n%s\n", k_header);
    for (int64_t i = 0; i < t->n; i++) {
        const tq_sens_row* r = &t->rows[i];
        n += (size_t)snprintf(b + n, cap - n, "%s\t%s\t%lld\t%lld\t%s\t%llu\t%.9e\n", r->tensor, r->role,
                              (long long)r->rows, (long long)r->cols, r->codec, (unsigned long long)r->bytes, r->omega);
    }
    *out = b;
    if (len) *len = n;
    return TQ_OK;
}

tq_status tq_sens_table_save(const tq_sens_table* t, const char* path)
{
    char* text = NULL;
    size_t len = 0;
    TQ_FORWARD(tq_sens_table_format(t, &text, &len));
    tq_status rc = tq_write_file_atomic(path, text, len);
    free(text);
    return rc;
}

// ------------------------------------------------------------------------------------------------
// Ω and measurement

double tq_omega(const float* dw, int64_t rows, int64_t cols, const double* h, int h_diag_only)
{
    double total = 0;
    if (h_diag_only) {
        for (int64_t r = 0; r < rows; r++) {
            const float* d = dw + r * cols;
            double s = 0;
            for (int64_t j = 0; j < cols; j++) s += (double)d[j] * (double)d[j] * h[j];
            total += s;
        }
        return total;
    }
    /* blocks of rows: M = D·H (dgemm), Ω += Σ M ∘ D */
    const int64_t RB = 64;
    double* d = malloc((size_t)(RB * cols) * sizeof(double));
    double* m = malloc((size_t)(RB * cols) * sizeof(double));
    if (!d || !m) {
        free(d);
        free(m);
        return NAN;
    }
    for (int64_t r0 = 0; r0 < rows; r0 += RB) {
        int64_t nr = rows - r0 < RB ? rows - r0 : RB;
        for (int64_t k = 0; k < nr * cols; k++) d[k] = dw[r0 * cols + k];
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nr, (int)cols, (int)cols, 1.0, d, (int)cols, h,
                    (int)cols, 0.0, m, (int)cols);
        double s = 0;
        for (int64_t k = 0; k < nr * cols; k++) s += m[k] * d[k];
        total += s;
    }
    free(d);
    free(m);
    return total;
}

tq_status tq_sens_measure(const float* w, int64_t rows, int64_t cols, const double* h, int h_diag_only,
                          const tq_codec* c, uint64_t seed, const tq_gptq_opts* gptq, const char* what,
                          double* omega, uint64_t* bytes)
{
    if (!w || !c || !omega || !bytes || rows <= 0 || cols <= 0)
        return tq_fail(TQ_ERR_ARG, "sensitivity %s: bad arguments", what ? what : "?");
    *bytes = tq_codec_bytes(c, rows, cols);
    if (!h) {
        *omega = 0;
        return TQ_OK;
    }
    if (gptq && h_diag_only)
        return tq_fail(TQ_ERR_ARG, "sensitivity %s: GPTQ needs the full H, only its diagonal was collected", what);
    tq_status rc = TQ_OK;
    tq_qtensor q;
    memset(&q, 0, sizeof q);
    size_t n = (size_t)rows * (size_t)cols;
    float* dq = malloc(n * sizeof(float));
    TQ_GOTO_FAIL(!dq, TQ_ERR_NOMEM, out, "sensitivity %s: out of memory (%zu floats)", what, n);
    TQ_CHECK_GOTO(tq_qtensor_alloc(&q, c, rows, cols, seed), out);
    if (gptq && tq_gptq_supports(c)) {
#ifdef TQ_HAVE_CUDA
        if (tq_linalg_use_gpu()) TQ_CHECK_GOTO(tq_gptq_quantize_gpu(w, h, gptq, &q, what), out);
        else
#endif
            TQ_CHECK_GOTO(tq_gptq_quantize_ref(w, h, gptq, &q, what), out);
    } else
        TQ_CHECK_GOTO(tq_quantize_ref(w, &q, what), out);
    TQ_CHECK_GOTO(tq_dequantize_ref(&q, dq), out);
    for (size_t i = 0; i < n; i++) dq[i] = w[i] - dq[i];
    *omega = tq_omega(dq, rows, cols, h, h_diag_only);
    TQ_GOTO_FAIL(!(*omega >= -1e-30) || isinf(*omega), TQ_ERR_NUMERIC, out,
                 "sensitivity %s codec %s: omega is %g (H not positive semi-definite or NaN in the data)", what,
                 c->name, *omega);
    if (*omega < 0) *omega = 0;
out:
    tq_qtensor_release(&q);
    free(dq);
    return rc;
}
