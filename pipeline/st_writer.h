/* st_writer.h — streaming safetensors writer (used by convert, synth and export).
 *
 * Writes one model.safetensors file, or a sharded Hugging Face checkpoint directory
 * (model-00001-of-0000N.safetensors ... + model.safetensors.index.json), without ever holding a whole
 * tensor file in memory:
 *   1. create  (a file path, or a directory + max shard size)
 *   2. add     every tensor (name, dtype, shape) — this fixes the header and every byte offset
 *   3. begin   writes the header(s) into temp files
 *   4. write   each tensor's bytes, whole or row range by row range, in any order
 *   5. finish  checks that every byte of every tensor was written, fsyncs and renames the temp files
 *              into place (fileio.h), then writes the index atomically. A crash before finish leaves
 *              only "*.tmp.<pid>" files, never a complete-looking checkpoint.
 * free() without finish() aborts (temp files removed).
 *
 * File layout written (safetensors):
 *   [u64 LE N][N bytes JSON header, space padded to a multiple of 8][tensor data, contiguous, no gaps]
 *   header = {"__metadata__":{"format":"pt",...}, "<name>":{"dtype":"F32","shape":[..],"data_offsets":[b,e]}, ...}
 *   Within one file tensors are laid out by dtype size (largest first), then in the order added, so every
 *   tensor starts aligned to its element size.
 * Sharding: tensors are assigned to shards in the order added; a shard is closed when the next tensor
 * would push it past max_shard_bytes (a tensor larger than the limit gets a shard of its own). When the
 * result is a single shard the directory gets a plain model.safetensors and no index.
 * Not thread-safe: one thread per writer (or serialize calls). Local (not collective). */
#ifndef TQ_ST_WRITER_H
#define TQ_ST_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "status.h"

typedef struct tq_st_writer tq_st_writer;

/* One file at `path` (e.g. OUT/model.safetensors). @return TQ_OK, TQ_ERR_ARG, TQ_ERR_NOMEM. */
tq_status tq_st_writer_create_file(const char* path, tq_st_writer** out);

/* A checkpoint directory (created if missing). max_shard_bytes == 0: no sharding (one model.safetensors).
 * @return TQ_OK, TQ_ERR_ARG, TQ_ERR_IO, TQ_ERR_NOMEM. */
tq_status tq_st_writer_create_dir(const char* dir, uint64_t max_shard_bytes, tq_st_writer** out);

/* Extra "__metadata__" string entries (written into every file). Before begin(). */
tq_status tq_st_writer_set_metadata(tq_st_writer* w, const char* key, const char* value);

/* Declare a tensor. ndim 0..8 (0 = scalar); every dim >= 0. Names must be unique and must not be
 * "__metadata__". Before begin(). @return TQ_OK, TQ_ERR_ARG (duplicate, bad dtype/shape), TQ_ERR_NOMEM. */
tq_status tq_st_writer_add(tq_st_writer* w, const char* name, tq_dtype dtype, int ndim, const int64_t* shape);

/* Fix the layout, open temp files, write headers. After this no add(). @return TQ_OK, TQ_ERR_IO, ... */
tq_status tq_st_writer_begin(tq_st_writer* w);

/* Write a whole tensor: nbytes must equal its byte size. Data in the declared dtype. */
tq_status tq_st_writer_write(tq_st_writer* w, const char* name, const void* data, size_t nbytes);

/* Write rows [row0, row0+nrows) (rows = product of all dims but the last, see ckpt.h) from data
 * (nrows * cols * dtype size bytes = nbytes). Ranges may come in any order; they must not overlap. */
tq_status tq_st_writer_write_rows(tq_st_writer* w, const char* name, int64_t row0, int64_t nrows,
                                  const void* data, size_t nbytes);

/* Same, from fp32 values converted to the tensor's dtype (round to nearest even). */
tq_status tq_st_writer_write_rows_f32(tq_st_writer* w, const char* name, int64_t row0, int64_t nrows,
                                      const float* data, int64_t n_values);

/* Check completeness (every byte of every tensor written, else TQ_ERR_ARG naming the first incomplete
 * tensor), fsync + rename every file into place, write the index (sharded). Then free() is still needed. */
tq_status tq_st_writer_finish(tq_st_writer* w);

/* Free; if finish() did not succeed, removes the temp files. Accepts NULL, sets *pw = NULL. */
void tq_st_writer_free(tq_st_writer** pw);

/* After begin(): number of files and the final path of file i (for reporting). */
int tq_st_writer_file_count(const tq_st_writer* w);
const char* tq_st_writer_file_path(const tq_st_writer* w, int i);
/* Total tensor bytes declared. */
uint64_t tq_st_writer_total_bytes(const tq_st_writer* w);

#endif
