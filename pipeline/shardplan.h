/* shardplan.h — the work units of a checkpoint and their assignment to MPI ranks.
 *
 * Two steps, kept apart on purpose:
 *  1. Units. Every tensor becomes one unit, or several row slices when it is larger than a fixed
 *     maximum unit size. Units are (tensor name, row0, nrows, bytes), sorted by (name, row0). They
 *     depend only on the tensor inventory and the max unit size / row alignment, never on the rank
 *     count, so a run can resume with a different number of ranks and still find its units.
 *  2. Assignment. Units are spread over N ranks (1..TQ_PLAN_MAX_RANKS) balanced by bytes: LPT greedy
 *     (largest unit first onto the least-loaded rank; ties broken by (name, row0) for units and by
 *     rank id for ranks). Deterministic and independent of the order the tensors were given in.
 *     Every byte of every tensor lands in exactly one unit and every unit on exactly one rank.
 *
 * Everything here is local (no MPI): every rank computes the same plan from the same inventory. */
#ifndef TQ_SHARDPLAN_H
#define TQ_SHARDPLAN_H

#include <stddef.h>
#include <stdint.h>

#include "arch.h"   /* defines: tq_arch (descriptor inventories) */
#include "ckpt.h"   /* defines: tq_ckpt, TQ_MAX_NAME */
#include "dtype.h"  /* defines: tq_dtype */
#include "status.h" /* defines: tq_status */

#define TQ_PLAN_MAX_RANKS 1024
/* Default maximum unit size: large tensors (embeddings, lm_head, fused experts) are cut into row slices
 * of at most this many bytes. Fixed, so units never depend on the rank count. */
#define TQ_UNIT_DEFAULT_MAX_BYTES ((uint64_t)64 << 20)

/* One tensor of an inventory, as the unit builder sees it. rows = product of all dims but the last,
 * row_bytes = last dim x dtype size (a scalar or 1-D tensor is one row). */
typedef struct {
    const char* name;
    int64_t rows;
    uint64_t row_bytes;
} tq_plan_tensor;

/* One unit of work: rows [row0, row0 + nrows) of tensor `name`. */
typedef struct {
    char name[TQ_MAX_NAME];
    int64_t row0, nrows;
    int64_t tensor_rows; /* rows of the whole tensor (nrows == tensor_rows: the whole tensor) */
    uint64_t row_bytes;
    uint64_t bytes;      /* nrows * row_bytes */
} tq_unit;

typedef struct {
    int64_t n_units;
    tq_unit* units;        /* sorted by (name, row0) */
    uint64_t max_unit_bytes;
    int64_t row_align;
} tq_unitlist;

/* Build units from a tensor list (any order). Tensors larger than max_unit_bytes are split into row
 * slices of nrows = a multiple of row_align (the last slice takes the remainder) with at most
 * max_unit_bytes each (a single aligned group of rows larger than that still forms one unit).
 * max_unit_bytes 0 -> TQ_UNIT_DEFAULT_MAX_BYTES; row_align <= 0 -> 1.
 * @return TQ_OK; TQ_ERR_ARG for a duplicate or empty name, negative rows; TQ_ERR_NOMEM. */
tq_status tq_units_build(const tq_plan_tensor* t, int64_t n, uint64_t max_unit_bytes, int64_t row_align,
                         tq_unitlist** out);
/* Same, from every tensor of a checkpoint (stored dtype). */
tq_status tq_units_from_ckpt(const tq_ckpt* c, uint64_t max_unit_bytes, int64_t row_align, tq_unitlist** out);
/* Same, from the descriptor's inventory as if stored in dtype (no files needed). */
tq_status tq_units_from_arch(const tq_arch* a, tq_dtype dtype, uint64_t max_unit_bytes, int64_t row_align,
                             tq_unitlist** out);
void tq_unitlist_free(tq_unitlist** pu);
uint64_t tq_unitlist_bytes(const tq_unitlist* u);
/* Index of the unit holding (name, row) or -1. Binary search. */
int64_t tq_unitlist_find(const tq_unitlist* u, const char* name, int64_t row);
/* Stable text key of a unit, for manifests: "<name>@<row0>+<nrows>". Returns bytes written (excl. NUL),
 * or -1 when cap is too small. */
int tq_unit_key(const tq_unit* u, char* dst, size_t dst_cap);

typedef struct {
    int n_ranks;
    const tq_unitlist* units; /* borrowed: must outlive the plan */
    int* rank_of;             /* [n_units] owning rank of each unit */
    uint64_t* rank_bytes;     /* [n_ranks] */
    int64_t* rank_count;      /* [n_ranks] units per rank */
    int64_t* rank_start;      /* [n_ranks + 1] CSR offsets into rank_units */
    int64_t* rank_units;      /* unit indices, per rank ascending (i.e. in (name, row0) order) */
} tq_shardplan;

/* Assign the units to n_ranks ranks (LPT, see top). n_ranks in 1..TQ_PLAN_MAX_RANKS else TQ_ERR_ARG. */
tq_status tq_shardplan_assign(const tq_unitlist* u, int n_ranks, tq_shardplan** out);
void tq_shardplan_free(tq_shardplan** pp);
/* Unit indices owned by rank (ascending); *count gets their number. */
const int64_t* tq_shardplan_rank_units(const tq_shardplan* p, int rank, int64_t* count);

typedef struct {
    uint64_t total, min, max;
    double mean, max_over_mean;
    int64_t n_units;
    uint64_t largest_unit;
} tq_plan_stats;
void tq_shardplan_stats(const tq_shardplan* p, tq_plan_stats* st);

/* Check that every unit is assigned to exactly one valid rank, per-rank sums match, and the units
 * tile every tensor's rows exactly once (no gap, no overlap). TQ_ERR_CORRUPT with a message otherwise. */
tq_status tq_shardplan_validate(const tq_shardplan* p);

#endif
