/* manifest.h — per-stage progress of a run: which work units are done, where their output lies and
 * its checksum. Designed for 40,000+ units and crash safety, independent of the rank count.
 *
 * Layout of one stage's folder (RUN/<stage>/):
 *
 *   units.tsv                 the stage's unit list (written once, atomically, by rank 0)
 *       tqpipe-units 1
 *       <n>
 *       <idx>\t<key>\t<bytes>\n ...          key = "<name>@<row0>+<nrows>" or any stable text
 *   manifest.tsv              compacted state (atomic rewrite by rank 0 at stage start and end)
 *       tqpipe-manifest 1
 *       units_hash <16 hex>                  XXH3-64 of units.tsv: a manifest of another unit list is stale
 *       through_attempt <a>                  journals of attempts <= a are already folded in
 *       <idx>\t<attempt>\t<seg>\t<off>\t<len>\t<xxh hex>\t<aux hex>\t<time>\n   one line per done unit
 *   journal/a<attempt>.r<rank>.jnl  append-only, one per rank and attempt: each record is one line,
 *       written with a single write() and fdatasync'd before the unit counts as done
 *       D <idx> <seg> <off> <len> <xxh hex> <aux hex> <time> <csum hex>\n    done
 *       B <idx> - 0 0 0 0 <time> <csum hex>\n                                 output found bad: redo
 *     csum = XXH3-64 of the line up to and excluding " <csum>", so a torn last line is ignored.
 *   seg/a<attempt>.r<rank>.seg      append-only unit outputs of that rank and attempt; the record's
 *       bytes are written and fdatasync'd before the journal line, so "done" implies durable data.
 *
 * Loading = units.tsv + manifest.tsv + every journal with attempt > through_attempt in (attempt, rank)
 * order; within one attempt a unit belongs to one rank, so that order is unambiguous. Per-unit update
 * cost: one pwrite + fdatasync of the output, one write + fdatasync of a ~100-byte line. */
#ifndef TQ_MANIFEST_H
#define TQ_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define TQ_MANIFEST_VERSION 1
#define TQ_UNITS_VERSION 1

typedef struct {
    int done;
    int attempt;        /* attempt that produced it */
    char seg[48];       /* segment file name under seg/ ("-" when the unit has no output bytes) */
    uint64_t off, len;  /* byte range in the segment */
    uint64_t xxh;       /* XXH3-64 of the output bytes (or the value the stage records) */
    uint64_t aux;       /* stage-defined value (e.g. NaN count) */
    double time;        /* unix time it was recorded */
} tq_unit_state;

typedef struct {
    char dir[4096];     /* the stage folder */
    int64_t n;          /* units */
    char** keys;        /* [n] */
    uint64_t* bytes;    /* [n] source bytes (for rates) */
    uint64_t units_hash;
    int through_attempt;
    int max_attempt;    /* highest attempt seen in journals or manifest */
    tq_unit_state* st;  /* [n] */
    int64_t n_done;
    int64_t torn_lines; /* journal lines ignored (bad checksum / incomplete) */
    double first_time, last_time; /* of done records (for the rate) */
} tq_manifest;

/* Write units.tsv (atomic). keys[i] must not contain tabs or newlines. LOCAL (rank 0). */
tq_status tq_units_write(const char* stage_dir, int64_t n, const char* const* keys, const uint64_t* bytes);

/* Load units.tsv, manifest.tsv and the journals. TQ_ERR_NOTFOUND when units.tsv is missing;
 * TQ_ERR_FORMAT (naming file and line) for a malformed units/manifest file or a wrong version.
 * A stale manifest (units hash mismatch) is ignored with a warning. LOCAL. */
tq_status tq_manifest_load(const char* stage_dir, tq_manifest** out);
void tq_manifest_free(tq_manifest** pm);

/* Fold the loaded state into manifest.tsv (atomic) with through_attempt = m->max_attempt, then delete
 * the folded journals. LOCAL (rank 0, while no other rank writes journals of this stage). */
tq_status tq_manifest_compact(tq_manifest* m);

/* Index of a key, or -1 (hash lookup). */
int64_t tq_manifest_find(const tq_manifest* m, const char* key);

/* Read unit idx's output bytes into buf (cap bytes) and check its XXH3-64.
 * @return TQ_OK; TQ_ERR_CORRUPT (checksum / truncated: names stage dir, unit key, segment);
 *         TQ_ERR_ARG (not done, buffer too small); TQ_ERR_IO. */
tq_status tq_manifest_read_unit(const tq_manifest* m, int64_t idx, void* buf, size_t cap);

/* ---- the writer side: one per rank and attempt ------------------------------------------------- */

/* Group commit: unit outputs are appended to the segment at once, but a batch of units becomes
 * durable and "done" together: fdatasync(segment), one write() of the batch's journal lines,
 * fdatasync(journal). A batch closes after TQ_JOURNAL_BATCH units (default 256), 64 MiB of output,
 * or TQ_JOURNAL_INTERVAL seconds (default 1.0) since the last commit, whichever comes first, and on
 * tq_journal_commit / close. A kill loses at most the open batch (redone on resume; never counted as
 * finished). With 40,000 units two fsyncs per unit would cost minutes; per batch they cost nothing.
 * Fault injection (TQ_FAULT kill/fail) sets the batch to 1 unit so "after K units" is exact. */
typedef struct {
    int jfd, sfd;
    char jpath[4096], spath[4096], segname[48];
    uint64_t seg_end;
    int64_t records;      /* lines made durable */
    int64_t committed;    /* 'D' records made durable (units done) */
    int nosync;           /* TQ_MANIFEST_NOSYNC=1 (benchmarks only): skip fdatasync */
    /* open batch */
    char* buf;
    size_t buf_len, buf_cap;
    int64_t batch_units, batch_done;
    uint64_t batch_bytes;
    double batch_t0;
    int64_t max_units;
    uint64_t max_bytes;
    double interval;
} tq_journal;

/* Open (create or append) journal/a<attempt>.r<rank>.jnl and, when with_segment, seg/... LOCAL. */
tq_status tq_journal_open(tq_journal* j, const char* stage_dir, int attempt, int rank, int with_segment);
/* Record unit idx done: data (may be NULL/0) is appended to the segment, the journal line to the open
 * batch; the batch is committed when full (see above). xxh NULL -> XXH3-64 of data.
 * TQ_ERR_NOSPACE on a full disk (the open batch is dropped: those units stay pending). */
tq_status tq_journal_put(tq_journal* j, int64_t idx, const void* data, size_t len, const uint64_t* xxh,
                         uint64_t aux);
/* Batch commit (pipeline/qbatch.c): n units whose outputs lie back to back in data (lens[i] bytes
 * each, in order) are appended to the segment with ONE pwrite, their n journal lines added, and the
 * whole open batch committed at once (fdatasync segment, one write of the lines, fdatasync journal):
 * the n units become done together or (kill, error) not at all. xxh NULL -> XXH3-64 of each output;
 * aux NULL -> 0. TQ_ERR_NOSPACE on a full disk (nothing of the batch is recorded). */
tq_status tq_journal_put_batch(tq_journal* j, int64_t n, const int64_t* idx, const void* data, const size_t* lens,
                               const uint64_t* xxh, const uint64_t* aux);
/* Record unit idx's output as bad (it will be redone). Committed at once. */
tq_status tq_journal_bad(tq_journal* j, int64_t idx);
/* Make the open batch durable now. */
tq_status tq_journal_commit(tq_journal* j);
/* Commit what is open, then close. Returns the commit's status. */
tq_status tq_journal_close(tq_journal* j);

/* Current attempt number for a stage folder: 1 + the highest attempt found (manifest or journals).
 * LOCAL (rank 0 computes it and broadcasts). */
int tq_manifest_next_attempt(const char* stage_dir);

#endif
