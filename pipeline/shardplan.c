/* shardplan.c — work units (tensor row slices) and their byte-balanced assignment to ranks
 * (pipeline/shardplan.h).
 *
 * Units: tensors sorted by name; a tensor above max_unit_bytes is cut into slices of
 * k = max(row_align, floor(max_unit_bytes / row_bytes) rounded down to a multiple of row_align) rows.
 * Assignment: LPT. Units sorted by bytes (descending), ties by their (name, row0) index; each goes to the
 * rank with the smallest load, ties to the lowest rank id (a binary min-heap keyed (load, rank)).
 * Graham's bound for this greedy: max load <= mean + largest unit, so with units much smaller than
 * the mean load the plan is within a few percent of perfect (tests/test_shardplan.c checks both). */
#include "shardplan.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ------------------------------------------------------------------------------------------------
// units

static int cmp_ptensor(const void* x, const void* y)
{
    return strcmp(((const tq_plan_tensor*)x)->name, ((const tq_plan_tensor*)y)->name);
}

tq_status tq_units_build(const tq_plan_tensor* t, int64_t n, uint64_t max_unit_bytes, int64_t row_align,
                         tq_unitlist** out)
{
    if (!out || (n > 0 && !t) || n < 0) return tq_fail(TQ_ERR_ARG, "tq_units_build: bad arguments");
    *out = NULL;
    if (max_unit_bytes == 0) max_unit_bytes = TQ_UNIT_DEFAULT_MAX_BYTES;
    if (row_align <= 0) row_align = 1;

    tq_plan_tensor* s = malloc((size_t)(n > 0 ? n : 1) * sizeof *s);
    if (!s) return tq_fail(TQ_ERR_NOMEM, "shard plan: out of memory (%" PRId64 " tensors)", n);
    if (n > 0) memcpy(s, t, (size_t)n * sizeof *s);
    int64_t total_units = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!s[i].name || !s[i].name[0] || strlen(s[i].name) >= TQ_MAX_NAME) {
            free(s);
            return tq_fail(TQ_ERR_ARG, "shard plan: tensor %" PRId64 " has an empty or too long name", i);
        }
        if (s[i].rows < 0) {
            tq_status rc = tq_fail(TQ_ERR_ARG, "shard plan: tensor %s has %" PRId64 " rows", s[i].name, s[i].rows);
            free(s);
            return rc;
        }
    }
    qsort(s, (size_t)n, sizeof *s, cmp_ptensor);
    for (int64_t i = 0; i < n; i++) {
        if (i > 0 && !strcmp(s[i].name, s[i - 1].name)) {
            tq_status rc = tq_fail(TQ_ERR_ARG, "shard plan: tensor %s is listed twice", s[i].name);
            free(s);
            return rc;
        }
        uint64_t bytes = (uint64_t)s[i].rows * s[i].row_bytes;
        if (bytes <= max_unit_bytes || s[i].rows <= row_align) {
            total_units += 1;
        } else {
            int64_t k = s[i].row_bytes ? (int64_t)(max_unit_bytes / s[i].row_bytes) : s[i].rows;
            k = k / row_align * row_align;
            if (k < row_align) k = row_align;
            total_units += (s[i].rows + k - 1) / k;
        }
    }
    tq_unitlist* u = calloc(1, sizeof *u);
    if (u) u->units = malloc((size_t)(total_units > 0 ? total_units : 1) * sizeof *u->units);
    if (!u || !u->units) {
        if (u) free(u);
        free(s);
        return tq_fail(TQ_ERR_NOMEM, "shard plan: out of memory (%" PRId64 " units)", total_units);
    }
    u->max_unit_bytes = max_unit_bytes;
    u->row_align = row_align;
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        uint64_t bytes = (uint64_t)s[i].rows * s[i].row_bytes;
        int64_t k = s[i].rows;
        if (bytes > max_unit_bytes && s[i].rows > row_align) {
            k = s[i].row_bytes ? (int64_t)(max_unit_bytes / s[i].row_bytes) : s[i].rows;
            k = k / row_align * row_align;
            if (k < row_align) k = row_align;
        }
        int64_t r0 = 0;
        do {
            tq_unit* x = &u->units[m++];
            memset(x, 0, sizeof *x);
            snprintf(x->name, sizeof x->name, "%s", s[i].name);
            x->row0 = r0;
            x->nrows = s[i].rows - r0 < k ? s[i].rows - r0 : k;
            x->tensor_rows = s[i].rows;
            x->row_bytes = s[i].row_bytes;
            x->bytes = (uint64_t)x->nrows * x->row_bytes;
            r0 += x->nrows;
        } while (r0 < s[i].rows);
    }
    free(s);
    u->n_units = m;
    *out = u;
    return TQ_OK;
}

tq_status tq_units_from_ckpt(const tq_ckpt* c, uint64_t max_unit_bytes, int64_t row_align, tq_unitlist** out)
{
    int64_t n = tq_ckpt_count(c);
    tq_plan_tensor* t = malloc((size_t)(n > 0 ? n : 1) * sizeof *t);
    if (!t) return tq_fail(TQ_ERR_NOMEM, "shard plan: out of memory");
    for (int64_t i = 0; i < n; i++) {
        const tq_tensor_info* ti = tq_ckpt_tensor(c, i);
        t[i].name = ti->name;
        t[i].rows = tq_tensor_rows(ti);
        t[i].row_bytes = (uint64_t)tq_tensor_cols(ti) * tq_dtype_size(ti->dtype);
    }
    tq_status rc = tq_units_build(t, n, max_unit_bytes, row_align, out);
    free(t);
    return rc;
}

tq_status tq_units_from_arch(const tq_arch* a, tq_dtype dtype, uint64_t max_unit_bytes, int64_t row_align,
                             tq_unitlist** out)
{
    if (tq_dtype_size(dtype) == 0) return tq_fail(TQ_ERR_ARG, "shard plan: invalid dtype");
    tq_plan_tensor* t = malloc((size_t)(a->n_tensors > 0 ? a->n_tensors : 1) * sizeof *t);
    if (!t) return tq_fail(TQ_ERR_NOMEM, "shard plan: out of memory");
    for (int64_t i = 0; i < a->n_tensors; i++) {
        t[i].name = a->tensors[i].name;
        t[i].rows = tq_arch_tensor_rows(&a->tensors[i]);
        t[i].row_bytes = (uint64_t)tq_arch_tensor_cols(&a->tensors[i]) * tq_dtype_size(dtype);
    }
    tq_status rc = tq_units_build(t, a->n_tensors, max_unit_bytes, row_align, out);
    free(t);
    return rc;
}

void tq_unitlist_free(tq_unitlist** pu)
{
    if (!pu || !*pu) return;
    free((*pu)->units);
    free(*pu);
    *pu = NULL;
}

uint64_t tq_unitlist_bytes(const tq_unitlist* u)
{
    uint64_t s = 0;
    for (int64_t i = 0; i < u->n_units; i++) s += u->units[i].bytes;
    return s;
}

int64_t tq_unitlist_find(const tq_unitlist* u, const char* name, int64_t row)
{
    /* last unit with (name, row0) <= (name, row) */
    int64_t lo = 0, hi = u->n_units - 1, best = -1;
    while (lo <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(u->units[mid].name, name);
        if (c < 0 || (c == 0 && u->units[mid].row0 <= row)) {
            best = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    if (best < 0) return -1;
    const tq_unit* x = &u->units[best];
    if (strcmp(x->name, name) || row < x->row0 || row >= x->row0 + x->nrows) {
        /* a zero-row tensor has one unit with nrows 0: match it at row 0 */
        if (!strcmp(x->name, name) && x->nrows == 0 && row == 0) return best;
        return -1;
    }
    return best;
}

int tq_unit_key(const tq_unit* u, char* dst, size_t cap)
{
    int n = snprintf(dst, cap, "%s@%" PRId64 "+%" PRId64, u->name, u->row0, u->nrows);
    if (n < 0 || (size_t)n >= cap) return -1;
    return n;
}

// ------------------------------------------------------------------------------------------------
// assignment

typedef struct {
    uint64_t load;
    int rank;
} slot;

static int slot_less(const slot* a, const slot* b)
{
    return a->load < b->load || (a->load == b->load && a->rank < b->rank);
}

static void heap_down(slot* h, int n, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && slot_less(&h[l], &h[m])) m = l;
        if (r < n && slot_less(&h[r], &h[m])) m = r;
        if (m == i) return;
        slot t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

typedef struct {
    uint64_t bytes;
    int64_t idx;
} lpt_item;

static int cmp_lpt(const void* x, const void* y)
{
    const lpt_item* a = x;
    const lpt_item* b = y;
    if (a->bytes != b->bytes) return a->bytes > b->bytes ? -1 : 1;
    return a->idx < b->idx ? -1 : a->idx > b->idx ? 1 : 0;
}

tq_status tq_shardplan_assign(const tq_unitlist* u, int n_ranks, tq_shardplan** out)
{
    if (!out || !u) return tq_fail(TQ_ERR_ARG, "tq_shardplan_assign: NULL argument");
    *out = NULL;
    if (n_ranks < 1 || n_ranks > TQ_PLAN_MAX_RANKS)
        return tq_fail(TQ_ERR_ARG, "shard plan: %d ranks is outside 1..%d", n_ranks, TQ_PLAN_MAX_RANKS);
    const int64_t n = u->n_units;
    tq_shardplan* p = calloc(1, sizeof *p);
    lpt_item* order = malloc((size_t)(n > 0 ? n : 1) * sizeof *order);
    slot* heap = malloc((size_t)n_ranks * sizeof *heap);
    if (p) {
        p->rank_of = malloc((size_t)(n > 0 ? n : 1) * sizeof *p->rank_of);
        p->rank_bytes = calloc((size_t)n_ranks, sizeof *p->rank_bytes);
        p->rank_count = calloc((size_t)n_ranks, sizeof *p->rank_count);
        p->rank_start = calloc((size_t)n_ranks + 1, sizeof *p->rank_start);
        p->rank_units = malloc((size_t)(n > 0 ? n : 1) * sizeof *p->rank_units);
    }
    if (!p || !order || !heap || !p->rank_of || !p->rank_bytes || !p->rank_count || !p->rank_start ||
        !p->rank_units) {
        free(order);
        free(heap);
        tq_shardplan_free(&p);
        return tq_fail(TQ_ERR_NOMEM, "shard plan: out of memory (%" PRId64 " units, %d ranks)", n, n_ranks);
    }
    p->n_ranks = n_ranks;
    p->units = u;
    for (int64_t i = 0; i < n; i++) order[i] = (lpt_item){u->units[i].bytes, i};
    qsort(order, (size_t)n, sizeof *order, cmp_lpt);
    for (int r = 0; r < n_ranks; r++) heap[r] = (slot){0, r}; /* already a valid heap: loads equal, ranks ascending */
    for (int64_t k = 0; k < n; k++) {
        int64_t i = order[k].idx;
        int r = heap[0].rank;
        p->rank_of[i] = r;
        heap[0].load += u->units[i].bytes;
        heap_down(heap, n_ranks, 0);
    }
    for (int64_t i = 0; i < n; i++) {
        p->rank_bytes[p->rank_of[i]] += u->units[i].bytes;
        p->rank_count[p->rank_of[i]]++;
    }
    for (int r = 0; r < n_ranks; r++) p->rank_start[r + 1] = p->rank_start[r] + p->rank_count[r];
    {
        int64_t* fill = calloc((size_t)n_ranks, sizeof *fill);
        if (!fill) {
            free(order);
            free(heap);
            tq_shardplan_free(&p);
            return tq_fail(TQ_ERR_NOMEM, "shard plan: out of memory");
        }
        for (int64_t i = 0; i < n; i++) {
            int r = p->rank_of[i];
            p->rank_units[p->rank_start[r] + fill[r]++] = i;
        }
        free(fill);
    }
    free(order);
    free(heap);
    *out = p;
    return TQ_OK;
}

void tq_shardplan_free(tq_shardplan** pp)
{
    if (!pp || !*pp) return;
    tq_shardplan* p = *pp;
    free(p->rank_of);
    free(p->rank_bytes);
    free(p->rank_count);
    free(p->rank_start);
    free(p->rank_units);
    free(p);
    *pp = NULL;
}

const int64_t* tq_shardplan_rank_units(const tq_shardplan* p, int rank, int64_t* count)
{
    if (!p || rank < 0 || rank >= p->n_ranks) {
        if (count) *count = 0;
        return NULL;
    }
    if (count) *count = p->rank_count[rank];
    return p->rank_units + p->rank_start[rank];
}

void tq_shardplan_stats(const tq_shardplan* p, tq_plan_stats* st)
{
    memset(st, 0, sizeof *st);
    st->n_units = p->units->n_units;
    st->min = UINT64_MAX;
    for (int r = 0; r < p->n_ranks; r++) {
        uint64_t b = p->rank_bytes[r];
        st->total += b;
        if (b < st->min) st->min = b;
        if (b > st->max) st->max = b;
    }
    for (int64_t i = 0; i < p->units->n_units; i++)
        if (p->units->units[i].bytes > st->largest_unit) st->largest_unit = p->units->units[i].bytes;
    st->mean = (double)st->total / p->n_ranks;
    st->max_over_mean = st->mean > 0 ? (double)st->max / st->mean : 1.0;
}

tq_status tq_shardplan_validate(const tq_shardplan* p)
{
    const tq_unitlist* u = p->units;
    uint64_t* sum = calloc((size_t)p->n_ranks, sizeof *sum);
    if (!sum) return tq_fail(TQ_ERR_NOMEM, "shard plan: out of memory");
    tq_status rc = TQ_OK;
    for (int64_t i = 0; i < u->n_units && rc == TQ_OK; i++) {
        const tq_unit* x = &u->units[i];
        if (p->rank_of[i] < 0 || p->rank_of[i] >= p->n_ranks) {
            rc = tq_fail(TQ_ERR_CORRUPT, "shard plan: unit %s@%" PRId64 " has rank %d", x->name, x->row0, p->rank_of[i]);
            break;
        }
        sum[p->rank_of[i]] += x->bytes;
        if (x->bytes != (uint64_t)x->nrows * x->row_bytes)
            rc = tq_fail(TQ_ERR_CORRUPT, "shard plan: unit %s@%" PRId64 " bytes mismatch", x->name, x->row0);
        /* tiling: first slice starts at 0, each next starts where the previous ended, last ends at rows */
        int first = i == 0 || strcmp(u->units[i - 1].name, x->name) != 0;
        int last = i + 1 == u->n_units || strcmp(u->units[i + 1].name, x->name) != 0;
        if (first && x->row0 != 0)
            rc = tq_fail(TQ_ERR_CORRUPT, "shard plan: tensor %s starts at row %" PRId64, x->name, x->row0);
        if (!first && u->units[i - 1].row0 + u->units[i - 1].nrows != x->row0)
            rc = tq_fail(TQ_ERR_CORRUPT, "shard plan: gap or overlap in %s at row %" PRId64, x->name, x->row0);
        if (last && x->row0 + x->nrows != x->tensor_rows)
            rc = tq_fail(TQ_ERR_CORRUPT, "shard plan: tensor %s ends at row %" PRId64 " of %" PRId64, x->name,
                         x->row0 + x->nrows, x->tensor_rows);
        if (!first && strcmp(u->units[i - 1].name, x->name) > 0)
            rc = tq_fail(TQ_ERR_CORRUPT, "shard plan: units not sorted at %s", x->name);
    }
    for (int r = 0; r < p->n_ranks && rc == TQ_OK; r++) {
        if (sum[r] != p->rank_bytes[r])
            rc = tq_fail(TQ_ERR_CORRUPT, "shard plan: rank %d byte sum mismatch", r);
        int64_t cnt;
        const int64_t* idx = tq_shardplan_rank_units(p, r, &cnt);
        for (int64_t k = 0; k < cnt && rc == TQ_OK; k++)
            if (p->rank_of[idx[k]] != r || (k > 0 && idx[k] <= idx[k - 1]))
                rc = tq_fail(TQ_ERR_CORRUPT, "shard plan: rank %d unit list inconsistent", r);
    }
    if (rc == TQ_OK && p->rank_start[p->n_ranks] != u->n_units)
        rc = tq_fail(TQ_ERR_CORRUPT, "shard plan: %" PRId64 " units listed, %" PRId64 " exist", p->rank_start[p->n_ranks],
                     u->n_units);
    free(sum);
    return rc;
}
