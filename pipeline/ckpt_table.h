/* ckpt_table.h — a compact binary table of a checkpoint's tensors (what tq_ckpt_open derives from the
 * index and every safetensors JSON header: name, dtype, shape, file, offset), written once (ingest) so
 * that the stages after it open a 40,000-tensor checkpoint on every rank without parsing every header
 * with jansson again (0.28 s per rank for the 122B-A10B inventory on the 2-core VM; the table: ~10 ms).
 *
 * The table is only a cache and is validated exactly before use: it records the XXH3-64 of the index
 * text, of config.json, and of every shard's 8-byte prefix + JSON header together with the shard's
 * size. The tensor list is a pure function of those bytes (offsets, spans and the checks tq_ckpt_open
 * makes depend on nothing else), so when they all match the table gives the same handle a full parse
 * would; when anything differs (a re-exported shard, an edited index, a new file size, a truncated or
 * corrupt table, another format version) the table is stale: the checkpoint is parsed normally, and
 * rebuilt when asked.
 *
 *   file (host byte order; it never leaves the run directory):
 *     "TQCKTAB1" u32 0x01020304 u32 mode (1 index, 2 single file) u64 index_xxh u64 config_xxh
 *     u32 has_config u32 nfiles i64 ntensors
 *     nfiles x  { u32 name_len, name, u64 size, u64 header_len, u64 header_xxh }
 *     ntensors x{ u16 name_len, name, i32 dtype, i32 ndim, i32 file_idx, u64 offset, u64 nbytes,
 *                 i64 shape[ndim] }   (name order, as tq_ckpt_tensor)
 *     u64 XXH3-64 of everything before it */
#ifndef TQ_CKPT_TABLE_H
#define TQ_CKPT_TABLE_H

#include "ckpt.h" /* defines: tq_ckpt */

#define TQ_CKPT_TABLE_NAME "ckpt_table.bin" /* in RUN/ingest */

/* Open the checkpoint directory model_dir from the table at table_path when the table matches the
 * files (see above); otherwise open it with tq_ckpt_open, and when rebuild = 1 write the table (atomic;
 * only when no checkpoint file changed during the parse; a failure to write is logged, not returned).
 * *from_table (may be NULL) = 1 when the table was used. model_dir that is not a directory: plain
 * tq_ckpt_open. Errors are tq_ckpt_open's. LOCAL. */
tq_status tq_ckpt_open_table(const char* model_dir, const char* table_path, int rebuild, tq_ckpt** out, int* from_table);

/* Write the table of an open checkpoint c (its files as they are now). LOCAL. */
tq_status tq_ckpt_table_write(const tq_ckpt* c, const char* table_path);

#endif
