/* ckpt.h — read-only access to a Hugging Face checkpoint directory:
 *   config.json + model.safetensors, or model-0000k-of-0000n.safetensors + model.safetensors.index.json.
 * Opening parses and validates every header (JSON, dtype, shape x dtype size = byte span, spans inside
 * the file and not overlapping, index entries pointing at existing files) but reads no tensor data.
 * Tensor bytes are read on demand with pread, one tensor or one row range at a time, so memory stays
 * bounded by what the caller asks for. Errors name the file and tensor (tq_last_error()). */
#ifndef TQ_CKPT_H
#define TQ_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "status.h"

#define TQ_MAX_NAME 256
#define TQ_MAX_DIMS 8

typedef struct {
    char name[TQ_MAX_NAME];
    tq_dtype dtype;
    int ndim;
    int64_t shape[TQ_MAX_DIMS];
    int file_idx;        /* which safetensors file (tq_ckpt_file_path) */
    uint64_t offset;     /* absolute byte offset of the data in that file */
    uint64_t nbytes;     /* = prod(shape) * dtype size */
} tq_tensor_info;

typedef struct tq_ckpt tq_ckpt;

/* Open a checkpoint directory (or a single .safetensors file, then config.json is looked up beside it).
 * @return TQ_OK, TQ_ERR_NOTFOUND, TQ_ERR_FORMAT, TQ_ERR_CORRUPT, TQ_ERR_IO. Local (not collective). */
tq_status tq_ckpt_open(const char* path, tq_ckpt** out);
void tq_ckpt_free(tq_ckpt** pc);

int64_t tq_ckpt_count(const tq_ckpt* c);
/* Tensors sorted by name (so every rank and every run sees the same order). */
const tq_tensor_info* tq_ckpt_tensor(const tq_ckpt* c, int64_t i);
const tq_tensor_info* tq_ckpt_find(const tq_ckpt* c, const char* name);
int tq_ckpt_file_count(const tq_ckpt* c);
const char* tq_ckpt_file_path(const tq_ckpt* c, int file_idx);
const char* tq_ckpt_dir(const tq_ckpt* c);
/* config.json text (NUL-terminated) or NULL when the checkpoint has none. */
const char* tq_ckpt_config_json(const tq_ckpt* c);

/* Elements per row: shape[ndim-1] (1 for scalars); rows: product of the other dims. */
int64_t tq_tensor_rows(const tq_tensor_info* t);
int64_t tq_tensor_cols(const tq_tensor_info* t);
int64_t tq_tensor_numel(const tq_tensor_info* t);

/* Read rows [row0, row0+nrows) in the stored dtype into dst (dst_cap bytes). */
tq_status tq_ckpt_read_raw(const tq_ckpt* c, const tq_tensor_info* t, int64_t row0, int64_t nrows,
                           void* dst, size_t dst_cap);
/* Same, converted to fp32 (dst_cap in bytes). */
tq_status tq_ckpt_read_f32(const tq_ckpt* c, const tq_tensor_info* t, int64_t row0, int64_t nrows,
                           float* dst, size_t dst_cap);

/* A handle over tensors that an earlier tq_ckpt_open of the same, unchanged files produced
 * (pipeline/ckpt_table.h checks that): t sorted by name, fds[i] open on paths[i] (sizes[i] bytes),
 * config the config.json text or NULL. Takes ownership of every array (also on failure). LOCAL. */
tq_status tq_ckpt_assemble(const char* dir, int nfiles, char** paths, int* fds, uint64_t* sizes, tq_tensor_info* t,
                           int64_t n, char* config, tq_ckpt** out);

#endif
