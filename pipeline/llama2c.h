/* llama2c.h — reader for Karpathy's llama2.c checkpoint format (legacy "version 0" export, fp32), as used
 * by the bundled stories260K.bin. Validated at open (header sanity, file size = implied size), then
 * read one layer slice of one block at a time with pread.
 *
 * File layout (all little endian):
 *   int32 dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
 *         (vocab_size < 0: the classifier is NOT tied to the embedding and follows at the end)
 *   float tok_embeddings [vocab, dim]
 *   float rms_att        [L, dim]
 *   float wq             [L, n_heads*hd, dim]      hd = dim / n_heads
 *   float wk             [L, n_kv_heads*hd, dim]
 *   float wv             [L, n_kv_heads*hd, dim]
 *   float wo             [L, dim, n_heads*hd]
 *   float rms_ffn        [L, dim]
 *   float w1             [L, hidden, dim]          (gate)
 *   float w2             [L, dim, hidden]          (down)
 *   float w3             [L, hidden, dim]          (up)
 *   float rms_final      [dim]
 *   float freq_cis_real  [seq_len, hd/2]           legacy RoPE tables (unused by run.c; may be absent
 *   float freq_cis_imag  [seq_len, hd/2]            when the classifier is tied)
 *   float wcls           [vocab, dim]              only when vocab_size < 0 in the header
 * Weights are [out, in] row-major (y = W x), the same orientation as Hugging Face Linear weights. */
#ifndef TQ_LLAMA2C_H
#define TQ_LLAMA2C_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define TQ_L2C_HEADER_BYTES 28

typedef struct {
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
    int head_dim;      /* dim / n_heads */
    int shared_cls;    /* 1 when the classifier is tied to the embedding (vocab_size > 0 in the file) */
    int has_rope;      /* 1 when the legacy RoPE tables are present */
} tq_l2c_config;

typedef enum {
    TQ_L2C_TOK_EMB = 0,
    TQ_L2C_RMS_ATT,
    TQ_L2C_WQ,
    TQ_L2C_WK,
    TQ_L2C_WV,
    TQ_L2C_WO,
    TQ_L2C_RMS_FFN,
    TQ_L2C_W1,
    TQ_L2C_W2,
    TQ_L2C_W3,
    TQ_L2C_RMS_FINAL,
    TQ_L2C_FREQ_REAL,
    TQ_L2C_FREQ_IMAG,
    TQ_L2C_WCLS,
    TQ_L2C_NBLOCKS
} tq_l2c_block;

typedef struct {
    uint64_t offset[TQ_L2C_NBLOCKS];   /* byte offset of each block (0 when absent) */
    int64_t rows[TQ_L2C_NBLOCKS];      /* per layer (or whole block when not per-layer) */
    int64_t cols[TQ_L2C_NBLOCKS];
    int per_layer[TQ_L2C_NBLOCKS];     /* 1: block holds n_layers slices of rows x cols */
    uint64_t total_bytes;              /* implied file size */
} tq_l2c_layout;

typedef struct tq_l2c tq_l2c;

/* Parse and validate the 28-byte header against the file size (label names the file in errors).
 * @return TQ_OK, TQ_ERR_FORMAT (bad header / size mismatch), TQ_ERR_CORRUPT (truncated),
 * TQ_ERR_UNSUPPORTED (llama2.c version 1/2 exports). Local. Safe on any input (fuzzed). */
tq_status tq_l2c_parse_header(const void* hdr, size_t hdr_len, uint64_t file_size, const char* label,
                              tq_l2c_config* cfg, tq_l2c_layout* lay);

/* Open and validate a .bin file (reads only the header). */
tq_status tq_l2c_open(const char* path, tq_l2c** out);
void tq_l2c_free(tq_l2c** pm);
const tq_l2c_config* tq_l2c_cfg(const tq_l2c* m);
const tq_l2c_layout* tq_l2c_lay(const tq_l2c* m);

/* Read layer `layer` of a per-layer block (layer ignored otherwise; use 0) as fp32 [rows x cols] into dst
 * (dst_cap bytes). TQ_ERR_NOTFOUND for an absent block (RoPE tables, untied wcls). */
tq_status tq_l2c_read(const tq_l2c* m, tq_l2c_block b, int layer, float* dst, size_t dst_cap);

/* Block name for messages ("wq", "rms_att", ...). */
const char* tq_l2c_block_name(tq_l2c_block b);

#endif
