/* llama2c.c — llama2.c .bin reader (format in llama2c.h). The header is checked for sane, consistent
 * sizes and the file size must be exactly what the header implies (with or without the legacy RoPE
 * tables; plus the untied classifier when vocab_size < 0), so a truncated or foreign file is refused
 * at open with a message naming it, instead of producing garbage weights later. */
#include "llama2c.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h" // defines: tq_pread_full, tq_errno_status

struct tq_l2c {
    char path[4096];
    int fd;
    uint64_t size;
    tq_l2c_config cfg;
    tq_l2c_layout lay;
};

static const char* const tq_l2c_names[TQ_L2C_NBLOCKS] = {
    "tok_embeddings", "rms_att", "wq", "wk", "wv", "wo", "rms_ffn", "w1", "w2", "w3", "rms_final",
    "freq_cis_real", "freq_cis_imag", "wcls"};

const char* tq_l2c_block_name(tq_l2c_block b)
{
    return (b >= 0 && b < TQ_L2C_NBLOCKS) ? tq_l2c_names[b] : "invalid";
}

static int32_t tq_le32(const unsigned char* p)
{
    uint32_t u = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
    int32_t v;
    memcpy(&v, &u, 4);
    return v;
}

tq_status tq_l2c_parse_header(const void* hdr, size_t hdr_len, uint64_t file_size, const char* label,
                              tq_l2c_config* cfg, tq_l2c_layout* lay)
{
    const char* file = label ? label : "(llama2.c file)";
    if (!hdr || !cfg || !lay) return tq_fail(TQ_ERR_ARG, "tq_l2c_parse_header: NULL argument");
    memset(cfg, 0, sizeof *cfg);
    memset(lay, 0, sizeof *lay);
    if (hdr_len < TQ_L2C_HEADER_BYTES || file_size < TQ_L2C_HEADER_BYTES)
        return tq_fail(TQ_ERR_CORRUPT, "%s: %llu bytes, shorter than the 28-byte llama2.c header: the file is truncated",
                       file, (unsigned long long)(file_size < hdr_len ? file_size : hdr_len));
    const unsigned char* p = hdr;
    if (!memcmp(p, "24ka", 4) || (uint32_t)tq_le32(p) == 0x616b3432u)
        return tq_fail(TQ_ERR_UNSUPPORTED,
                       "%s: a llama2.c version %d export (magic \"ak42\"); only the legacy version 0 fp32 format is "
                       "supported: re-export with llama2.c's export.py --version 0",
                       file, tq_le32(p + 4));
    int32_t v[7];
    for (int i = 0; i < 7; i++) v[i] = tq_le32(p + 4 * i);
    static const char* const field[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
    static const int32_t maxv[7] = {1 << 16, 1 << 20, 4096, 4096, 4096, 1 << 24, 1 << 24};
    for (int i = 0; i < 7; i++) {
        int32_t x = v[i];
        if (i == 5 && x < 0 && x != INT32_MIN) x = -x; /* negative vocab: untied classifier */
        if (x <= 0 || x > maxv[i])
            return tq_fail(TQ_ERR_FORMAT,
                           "%s: header field %s = %d is outside 1..%d: this is not a llama2.c (version 0) checkpoint",
                           file, field[i], v[i], maxv[i]);
    }
    cfg->dim = v[0];
    cfg->hidden_dim = v[1];
    cfg->n_layers = v[2];
    cfg->n_heads = v[3];
    cfg->n_kv_heads = v[4];
    cfg->shared_cls = v[5] > 0;
    cfg->vocab_size = v[5] > 0 ? v[5] : -v[5];
    cfg->seq_len = v[6];
    if (cfg->dim % cfg->n_heads != 0 || cfg->n_heads % cfg->n_kv_heads != 0 || (cfg->dim / cfg->n_heads) % 2 != 0)
        return tq_fail(TQ_ERR_FORMAT,
                       "%s: inconsistent header: dim %d, n_heads %d, n_kv_heads %d (need dim %% n_heads == 0, "
                       "n_heads %% n_kv_heads == 0, even head size): not a llama2.c checkpoint",
                       file, cfg->dim, cfg->n_heads, cfg->n_kv_heads);
    cfg->head_dim = cfg->dim / cfg->n_heads;

    const int64_t L = cfg->n_layers, D = cfg->dim, H = cfg->hidden_dim, V = cfg->vocab_size;
    const int64_t KV = (int64_t)cfg->n_kv_heads * cfg->head_dim;
    const int64_t Q = (int64_t)cfg->n_heads * cfg->head_dim;
    const int64_t half = cfg->head_dim / 2;
    const int64_t rows[TQ_L2C_NBLOCKS] = {V, 1, Q, KV, KV, D, 1, H, D, H, 1, cfg->seq_len, cfg->seq_len, V};
    const int64_t cols[TQ_L2C_NBLOCKS] = {D, D, D, D, D, Q, D, D, H, D, D, half, half, D};
    const int per_layer[TQ_L2C_NBLOCKS] = {0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0};
    uint64_t off = TQ_L2C_HEADER_BYTES;
    for (int b = 0; b < TQ_L2C_NBLOCKS; b++) {
        lay->rows[b] = rows[b];
        lay->cols[b] = cols[b];
        lay->per_layer[b] = per_layer[b];
        lay->offset[b] = off;
        off += (uint64_t)(per_layer[b] ? L : 1) * (uint64_t)rows[b] * (uint64_t)cols[b] * 4u;
        if (b == TQ_L2C_RMS_FINAL) lay->total_bytes = off; /* weights without RoPE tables */
    }
    const uint64_t base = lay->total_bytes;
    const uint64_t with_rope = lay->offset[TQ_L2C_WCLS];
    const uint64_t with_cls = off;
    if (cfg->shared_cls) {
        lay->offset[TQ_L2C_WCLS] = 0;
        if (file_size == base) {
            cfg->has_rope = 0;
            lay->offset[TQ_L2C_FREQ_REAL] = lay->offset[TQ_L2C_FREQ_IMAG] = 0;
        } else if (file_size == with_rope) {
            cfg->has_rope = 1;
            lay->total_bytes = with_rope;
        } else {
            return tq_fail(file_size < base ? TQ_ERR_CORRUPT : TQ_ERR_FORMAT,
                           "%s: file is %llu bytes but its header (dim %d, hidden %d, layers %d, heads %d/%d, vocab %d, "
                           "seq_len %d) implies %llu bytes (or %llu with the legacy RoPE tables): the file is %s",
                           file, (unsigned long long)file_size, cfg->dim, cfg->hidden_dim, cfg->n_layers,
                           cfg->n_heads, cfg->n_kv_heads, cfg->vocab_size, cfg->seq_len, (unsigned long long)base,
                           (unsigned long long)with_rope,
                           file_size < base ? "truncated: copy it again" : "not a llama2.c version 0 checkpoint");
        }
    } else {
        cfg->has_rope = 1;
        lay->total_bytes = with_cls;
        if (file_size != with_cls)
            return tq_fail(file_size < with_cls ? TQ_ERR_CORRUPT : TQ_ERR_FORMAT,
                           "%s: file is %llu bytes but its header (untied classifier, vocab %d) implies %llu bytes: "
                           "the file is %s",
                           file, (unsigned long long)file_size, cfg->vocab_size, (unsigned long long)with_cls,
                           file_size < with_cls ? "truncated: copy it again" : "not a llama2.c version 0 checkpoint");
    }
    return TQ_OK;
}

tq_status tq_l2c_open(const char* path, tq_l2c** out)
{
    if (!path || !out) return tq_fail(TQ_ERR_ARG, "tq_l2c_open: NULL argument");
    *out = NULL;
    tq_l2c* m = calloc(1, sizeof *m);
    if (!m) return tq_fail(TQ_ERR_NOMEM, "no memory");
    snprintf(m->path, sizeof m->path, "%s", path);
    m->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (m->fd < 0) {
        tq_status rc = tq_errno_status(errno, "opening llama2.c checkpoint", path);
        free(m);
        return rc;
    }
    tq_status rc = TQ_OK;
    struct stat st;
    unsigned char hdr[TQ_L2C_HEADER_BYTES];
    TQ_GOTO_FAIL(fstat(m->fd, &st) != 0 || !S_ISREG(st.st_mode), TQ_ERR_IO, fail, "%s is not a readable regular file",
                 path);
    m->size = (uint64_t)st.st_size;
    (void)posix_fadvise(m->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    size_t hn = m->size < sizeof hdr ? (size_t)m->size : sizeof hdr;
    TQ_CHECK_GOTO(tq_pread_full(m->fd, hdr, hn, 0, path), fail);
    TQ_CHECK_GOTO(tq_l2c_parse_header(hdr, hn, m->size, path, &m->cfg, &m->lay), fail);
    *out = m;
    return TQ_OK;
fail:
    close(m->fd);
    free(m);
    return rc;
}

void tq_l2c_free(tq_l2c** pm)
{
    if (!pm || !*pm) return;
    if ((*pm)->fd >= 0) close((*pm)->fd);
    free(*pm);
    *pm = NULL;
}

const tq_l2c_config* tq_l2c_cfg(const tq_l2c* m) { return m ? &m->cfg : NULL; }
const tq_l2c_layout* tq_l2c_lay(const tq_l2c* m) { return m ? &m->lay : NULL; }

tq_status tq_l2c_read(const tq_l2c* m, tq_l2c_block b, int layer, float* dst, size_t dst_cap)
{
    if (!m || !dst || b < 0 || b >= TQ_L2C_NBLOCKS) return tq_fail(TQ_ERR_ARG, "tq_l2c_read: bad argument");
    const tq_l2c_layout* l = &m->lay;
    if (l->offset[b] == 0)
        return tq_fail(TQ_ERR_NOTFOUND, "%s: block %s is not present in this file", m->path, tq_l2c_names[b]);
    if (l->per_layer[b] && (layer < 0 || layer >= m->cfg.n_layers))
        return tq_fail(TQ_ERR_ARG, "%s: layer %d of %s out of range (0..%d)", m->path, layer, tq_l2c_names[b],
                       m->cfg.n_layers - 1);
    uint64_t n = (uint64_t)l->rows[b] * (uint64_t)l->cols[b] * 4u;
    if (n > dst_cap)
        return tq_fail(TQ_ERR_ARG, "%s: %s needs %llu bytes, buffer holds %zu", m->path, tq_l2c_names[b],
                       (unsigned long long)n, dst_cap);
    uint64_t off = l->offset[b] + (l->per_layer[b] ? (uint64_t)layer * n : 0);
    TQ_FORWARD(tq_pread_full(m->fd, dst, (size_t)n, off, m->path));
    /* the format is little endian; so is every machine tqpipe targets (x86-64, aarch64) */
    return TQ_OK;
}
