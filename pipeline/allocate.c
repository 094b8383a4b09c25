/* allocate.c — multiple-choice knapsack solver (LP bound + greedy + repair + core branch and bound),
 * allocation of codecs over a sensitivity table, budget parsing, rules, and the plan file.
 * See allocate.h for the method and the file format. */
#include "allocate.h"

#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h" /* defines: tq_read_file, tq_write_file_atomic */

// ------------------------------------------------------------------------------------------------
// MCKP: per-item Pareto sets and hulls

typedef struct {
    int64_t n_par;   /* Pareto options (bytes ascending, omega strictly descending) */
    int64_t* par;    /* absolute option indices */
    int64_t n_hull;  /* lower convex hull, a subsequence of par */
    int64_t* hull;
} mk_item;

typedef struct {
    int64_t item;  /* item index (or core position during the search) */
    int64_t j;     /* segment hull[j] -> hull[j+1] */
    uint64_t db;
    double dw;     /* omega decrease (> 0) */
    double eff;    /* dw / db */
} mk_seg;

static int seg_cmp(const void* a, const void* b)
{
    const mk_seg* x = a;
    const mk_seg* y = b;
    if (x->eff != y->eff) return x->eff > y->eff ? -1 : 1;
    if (x->item != y->item) return x->item < y->item ? -1 : 1;
    return x->j < y->j ? -1 : (x->j > y->j);
}

typedef struct {
    const uint64_t* bytes;
    const double* omega;
} mk_sort_ctx;
static _Thread_local mk_sort_ctx mk_ctx;

static int opt_cmp(const void* a, const void* b)
{
    int64_t i = *(const int64_t*)a, j = *(const int64_t*)b;
    if (mk_ctx.bytes[i] != mk_ctx.bytes[j]) return mk_ctx.bytes[i] < mk_ctx.bytes[j] ? -1 : 1;
    if (mk_ctx.omega[i] != mk_ctx.omega[j]) return mk_ctx.omega[i] < mk_ctx.omega[j] ? -1 : 1;
    return i < j ? -1 : (i > j);
}

/* Pareto set and lower convex hull of one item's options. */
static tq_status mk_item_build(const tq_mckp* p, int64_t i, mk_item* it)
{
    int64_t s = p->start[i], e = p->start[i + 1], m = e - s;
    it->par = malloc((size_t)(m > 0 ? m : 1) * sizeof(int64_t));
    it->hull = malloc((size_t)(m > 0 ? m : 1) * sizeof(int64_t));
    if (!it->par || !it->hull) return tq_fail(TQ_ERR_NOMEM, "allocate: out of memory (%lld options)", (long long)m);
    int64_t* tmp = malloc((size_t)(m > 0 ? m : 1) * sizeof(int64_t));
    if (!tmp) return tq_fail(TQ_ERR_NOMEM, "allocate: out of memory");
    for (int64_t k = 0; k < m; k++) tmp[k] = s + k;
    mk_ctx.bytes = p->bytes;
    mk_ctx.omega = p->omega;
    qsort(tmp, (size_t)m, sizeof(int64_t), opt_cmp);
    it->n_par = 0;
    for (int64_t k = 0; k < m; k++) {
        int64_t o = tmp[k];
        if (it->n_par > 0 && p->omega[o] >= p->omega[it->par[it->n_par - 1]]) continue; /* dominated */
        it->par[it->n_par++] = o;
    }
    free(tmp);
    /* lower hull over (bytes, omega) with bytes increasing: keep slopes strictly increasing */
    it->n_hull = 0;
    for (int64_t k = 0; k < it->n_par; k++) {
        int64_t c = it->par[k];
        while (it->n_hull >= 2) {
            int64_t a = it->hull[it->n_hull - 2], b = it->hull[it->n_hull - 1];
            double bx = (double)(p->bytes[b] - p->bytes[a]), by = p->omega[b] - p->omega[a];
            double cx = (double)(p->bytes[c] - p->bytes[a]), cy = p->omega[c] - p->omega[a];
            /* b is on or above the segment a-c -> drop b */
            if (by * cx >= cy * bx) it->n_hull--;
            else break;
        }
        it->hull[it->n_hull++] = c;
    }
    return TQ_OK;
}

// ------------------------------------------------------------------------------------------------
// branch and bound over the core

typedef struct {
    const tq_mckp* p;
    int64_t k;            /* core size */
    mk_item** it;         /* [k] core items */
    int64_t* item_of;     /* [k] item index */
    mk_seg* seg;          /* core segments, item = core position, sorted by efficiency */
    int64_t nseg;
    uint64_t* suf_bytes;  /* [k+1] Σ hull[0] bytes of positions >= d */
    double* suf_omega;    /* [k+1] */
    int64_t* cur;         /* [k] current choice (absolute option) */
    int64_t* best;        /* [k] */
    double best_omega;
    int64_t nodes, max_nodes;
    int aborted;
} mk_bb;

/* LP lower bound of positions >= d with `room` bytes; INFINITY when even the minimum does not fit. */
static double mk_lp_bound(const mk_bb* b, int64_t d, uint64_t room)
{
    if (b->suf_bytes[d] > room) return INFINITY;
    uint64_t left = room - b->suf_bytes[d];
    double w = b->suf_omega[d];
    for (int64_t s = 0; s < b->nseg; s++) {
        const mk_seg* g = &b->seg[s];
        if (g->item < d) continue;
        if (g->db <= left) {
            left -= g->db;
            w -= g->dw;
        } else {
            w -= g->dw * ((double)left / (double)g->db);
            break;
        }
    }
    return w;
}

static void mk_search(mk_bb* b, int64_t d, uint64_t room, double w)
{
    if (b->aborted) return;
    if (++b->nodes > b->max_nodes) {
        b->aborted = 1;
        return;
    }
    if (d == b->k) {
        if (w < b->best_omega) {
            b->best_omega = w;
            memcpy(b->best, b->cur, (size_t)b->k * sizeof(int64_t));
        }
        return;
    }
    double lb = w + mk_lp_bound(b, d, room);
    double tol = 1e-12 * fabs(b->best_omega);
    if (!(lb < b->best_omega - tol)) return;
    const mk_item* it = b->it[d];
    /* largest option first (lowest omega): finds good incumbents early */
    for (int64_t q = it->n_par - 1; q >= 0; q--) {
        int64_t o = it->par[q];
        uint64_t by = b->p->bytes[o];
        if (by > room) continue;
        if (room - by < b->suf_bytes[d + 1]) continue;
        b->cur[d] = o;
        mk_search(b, d + 1, room - by, w + b->p->omega[o]);
        if (b->aborted) return;
    }
}

typedef struct {
    int64_t item;
    double dist;
} mk_rank;

static int rank_cmp(const void* a, const void* b)
{
    const mk_rank* x = a;
    const mk_rank* y = b;
    if (x->dist != y->dist) return x->dist < y->dist ? -1 : 1;
    return x->item < y->item ? -1 : (x->item > y->item);
}

tq_status tq_mckp_solve(const tq_mckp* p, uint64_t budget, const tq_mckp_opts* o, int64_t* choice,
                        tq_mckp_result* res)
{
    if (!p || !choice || !res || p->n < 0) return tq_fail(TQ_ERR_ARG, "tq_mckp_solve: NULL argument");
    memset(res, 0, sizeof *res);
    int64_t n = p->n;
    int64_t core_max = o && o->core > 0 ? o->core : 48;
    int64_t max_nodes = o && o->max_nodes > 0 ? o->max_nodes : 4000000;
    for (int64_t i = 0; i < n; i++) {
        if (p->start[i + 1] <= p->start[i])
            return tq_fail(TQ_ERR_ARG, "allocate: item %lld has no option", (long long)i);
        for (int64_t k = p->start[i]; k < p->start[i + 1]; k++)
            if (!(p->omega[k] >= 0) || isinf(p->omega[k]))
                return tq_fail(TQ_ERR_ARG, "allocate: item %lld option %lld has omega %g (must be finite, >= 0)",
                               (long long)i, (long long)(k - p->start[i]), p->omega[k]);
    }
    tq_status rc = TQ_OK;
    mk_item* it = calloc((size_t)(n > 0 ? n : 1), sizeof *it);
    mk_seg* seg = NULL;
    int64_t* hpos = calloc((size_t)(n > 0 ? n : 1), sizeof(int64_t)); /* hull position of the LP choice */
    mk_rank* rk = NULL;
    mk_bb bb;
    memset(&bb, 0, sizeof bb);
    TQ_GOTO_FAIL(!it || !hpos, TQ_ERR_NOMEM, out, "allocate: out of memory (%lld items)", (long long)n);
    int64_t nseg = 0;
    for (int64_t i = 0; i < n; i++) {
        TQ_CHECK_GOTO(mk_item_build(p, i, &it[i]), out);
        nseg += it[i].n_hull - 1;
    }
    seg = malloc((size_t)(nseg > 0 ? nseg : 1) * sizeof *seg);
    TQ_GOTO_FAIL(!seg, TQ_ERR_NOMEM, out, "allocate: out of memory (%lld segments)", (long long)nseg);
    nseg = 0;
    uint64_t bytes = 0;
    double w = 0;
    for (int64_t i = 0; i < n; i++) {
        bytes += p->bytes[it[i].hull[0]];
        w += p->omega[it[i].hull[0]];
        for (int64_t j = 0; j + 1 < it[i].n_hull; j++) {
            mk_seg* g = &seg[nseg++];
            g->item = i;
            g->j = j;
            g->db = p->bytes[it[i].hull[j + 1]] - p->bytes[it[i].hull[j]];
            g->dw = p->omega[it[i].hull[j]] - p->omega[it[i].hull[j + 1]];
            g->eff = g->dw / (double)g->db;
        }
    }
    if (bytes > budget) {
        rc = tq_fail(TQ_ERR_ARG,
                     "allocate: the budget (%llu bytes) is below the smallest possible model (%llu bytes with "
                     "the smallest allowed codec for every tensor): raise the budget or allow smaller codecs",
                     (unsigned long long)budget, (unsigned long long)bytes);
        goto out;
    }
    qsort(seg, (size_t)nseg, sizeof *seg, seg_cmp);
    /* LP: take segments by efficiency while they fit */
    double lb = 0, lambda = 0;
    int64_t crit = -1;
    for (int64_t s = 0; s < nseg; s++) {
        if (seg[s].db <= budget - bytes) {
            bytes += seg[s].db;
            w -= seg[s].dw;
            hpos[seg[s].item] = seg[s].j + 1;
        } else {
            crit = s;
            break;
        }
    }
    if (crit >= 0) {
        lb = w - seg[crit].dw * ((double)(budget - bytes) / (double)seg[crit].db);
        lambda = seg[crit].eff;
    } else {
        lb = w;
    }
    for (int64_t i = 0; i < n; i++) choice[i] = it[i].hull[hpos[i]];
    /* repair: repeatedly take the single-item change with the largest omega decrease that fits */
    for (;;) {
        int64_t bi = -1, bo = -1;
        double bgain = 0;
        uint64_t room = budget - bytes;
        for (int64_t i = 0; i < n; i++) {
            uint64_t cb = p->bytes[choice[i]];
            double cw = p->omega[choice[i]];
            for (int64_t q = 0; q < it[i].n_par; q++) {
                int64_t oo = it[i].par[q];
                if (p->bytes[oo] > cb && p->bytes[oo] - cb > room) break;
                double gain = cw - p->omega[oo];
                if (gain > bgain) {
                    bgain = gain;
                    bi = i;
                    bo = oo;
                }
            }
        }
        if (bi < 0) break;
        bytes = bytes - p->bytes[choice[bi]] + p->bytes[bo];
        w -= bgain;
        choice[bi] = bo;
    }
    res->greedy_omega = w;
    res->lower_bound = lb;
    res->lambda = lambda;

    /* core: items with a choice to make, ranked by how close their hull slopes are to lambda */
    rk = malloc((size_t)(n > 0 ? n : 1) * sizeof *rk);
    TQ_GOTO_FAIL(!rk, TQ_ERR_NOMEM, out, "allocate: out of memory");
    int64_t nmulti = 0;
    for (int64_t i = 0; i < n; i++) {
        if (it[i].n_par < 2) continue;
        double dist = INFINITY;
        for (int64_t j = 0; j + 1 < it[i].n_hull; j++) {
            double eff = (p->omega[it[i].hull[j]] - p->omega[it[i].hull[j + 1]]) /
                         (double)(p->bytes[it[i].hull[j + 1]] - p->bytes[it[i].hull[j]]);
            double dd = lambda > 0 && eff > 0 ? fabs(log(eff / lambda)) : 0;
            if (dd < dist) dist = dd;
        }
        if (it[i].n_hull < 2) dist = 0; /* only non-hull options: let the search look at them */
        rk[nmulti].item = i;
        rk[nmulti].dist = dist;
        nmulti++;
    }
    qsort(rk, (size_t)nmulti, sizeof *rk, rank_cmp);
    int64_t k = nmulti < core_max ? nmulti : core_max;
    int gap_zero = (w - lb) <= 1e-12 * fmax(1.0, fabs(w));
    if (k > 0 && !gap_zero) {
        bb.p = p;
        bb.k = k;
        bb.it = malloc((size_t)k * sizeof *bb.it);
        bb.item_of = malloc((size_t)k * sizeof(int64_t));
        bb.seg = malloc((size_t)(nseg > 0 ? nseg : 1) * sizeof *bb.seg);
        bb.suf_bytes = calloc((size_t)k + 1, sizeof(uint64_t));
        bb.suf_omega = calloc((size_t)k + 1, sizeof(double));
        bb.cur = malloc((size_t)k * sizeof(int64_t));
        bb.best = malloc((size_t)k * sizeof(int64_t));
        TQ_GOTO_FAIL(!bb.it || !bb.item_of || !bb.seg || !bb.suf_bytes || !bb.suf_omega || !bb.cur || !bb.best,
                     TQ_ERR_NOMEM, out, "allocate: out of memory (core %lld)", (long long)k);
        /* search order: the most uncertain items (hull slopes closest to lambda) first */
        for (int64_t d = 0; d < k; d++) {
            bb.item_of[d] = rk[d].item;
            bb.it[d] = &it[rk[d].item];
        }
        uint64_t fixed_bytes = bytes;
        double fixed_w = w;
        for (int64_t d = 0; d < k; d++) {
            fixed_bytes -= p->bytes[choice[bb.item_of[d]]];
            fixed_w -= p->omega[choice[bb.item_of[d]]];
            bb.best[d] = choice[bb.item_of[d]];
        }
        for (int64_t d = k - 1; d >= 0; d--) {
            bb.suf_bytes[d] = bb.suf_bytes[d + 1] + p->bytes[bb.it[d]->hull[0]];
            bb.suf_omega[d] = bb.suf_omega[d + 1] + p->omega[bb.it[d]->hull[0]];
        }
        /* core segments, renumbered by core position (kept in global efficiency order) */
        int64_t* pos = malloc((size_t)(n > 0 ? n : 1) * sizeof(int64_t));
        TQ_GOTO_FAIL(!pos, TQ_ERR_NOMEM, out, "allocate: out of memory");
        for (int64_t i = 0; i < n; i++) pos[i] = -1;
        for (int64_t d = 0; d < k; d++) pos[bb.item_of[d]] = d;
        for (int64_t s = 0; s < nseg; s++) {
            if (pos[seg[s].item] < 0) continue;
            bb.seg[bb.nseg] = seg[s];
            bb.seg[bb.nseg].item = pos[seg[s].item];
            bb.nseg++;
        }
        free(pos);
        bb.best_omega = w - fixed_w; /* the incumbent: the greedy choice of the core */
        bb.max_nodes = max_nodes;
        mk_search(&bb, 0, budget - fixed_bytes, 0.0);
        bytes = fixed_bytes;
        w = fixed_w + bb.best_omega;
        for (int64_t d = 0; d < k; d++) {
            choice[bb.item_of[d]] = bb.best[d];
            bytes += p->bytes[bb.best[d]];
        }
        res->nodes = bb.nodes;
        res->core = k;
        res->proven_optimal = !bb.aborted && k == nmulti;
    } else {
        res->proven_optimal = 1;
    }
    /* recompute exactly from the choice */
    bytes = 0;
    w = 0;
    for (int64_t i = 0; i < n; i++) {
        bytes += p->bytes[choice[i]];
        w += p->omega[choice[i]];
    }
    if ((w - lb) <= 1e-12 * fmax(1.0, fabs(w))) res->proven_optimal = 1;
    res->bytes = bytes;
    res->omega = w;
    if (lb > w) res->lower_bound = w; /* rounding: the bound never exceeds a feasible value */
out:
    if (it)
        for (int64_t i = 0; i < n; i++) {
            free(it[i].par);
            free(it[i].hull);
        }
    free(it);
    free(seg);
    free(hpos);
    free(rk);
    free(bb.it);
    free(bb.item_of);
    free(bb.seg);
    free(bb.suf_bytes);
    free(bb.suf_omega);
    free(bb.cur);
    free(bb.best);
    return rc;
}

// ------------------------------------------------------------------------------------------------
// budget and rules

tq_status tq_budget_parse(const char* s, int64_t total_weights, uint64_t* out)
{
    if (!s || !out) return tq_fail(TQ_ERR_ARG, "budget: NULL argument");
    errno = 0;
    char* end = NULL;
    double v = strtod(s, &end);
    if (end == s || errno || !(v > 0) || isinf(v))
        return tq_fail(TQ_ERR_ARG, "budget '%s': expected a positive number with a unit, e.g. 2.5bpw, 18GB, 18GiB", s);
    while (*end == ' ') end++;
    struct {
        const char* unit;
        double mult;
    } units[] = {{"", 1}, {"b", 1}, {"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
                 {"kib", 1024.0}, {"mib", 1048576.0}, {"gib", 1073741824.0}, {"tib", 1099511627776.0}};
    char u[16];
    size_t ul = strlen(end);
    if (ul >= sizeof u) return tq_fail(TQ_ERR_ARG, "budget '%s': unknown unit '%s'", s, end);
    for (size_t i = 0; i <= ul; i++) u[i] = (char)tolower((unsigned char)end[i]);
    double bytes = -1;
    if (!strcmp(u, "bpw")) {
        if (total_weights <= 0) return tq_fail(TQ_ERR_ARG, "budget '%s': no weights to count bits over", s);
        if (v > 64) return tq_fail(TQ_ERR_ARG, "budget '%s': more than 64 bits per weight is not a budget", s);
        bytes = floor(v * (double)total_weights / 8.0 + 1e-9);
    } else {
        for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
            if (!strcmp(u, units[i].unit)) bytes = floor(v * units[i].mult + 1e-9);
    }
    if (bytes < 0)
        return tq_fail(TQ_ERR_ARG, "budget '%s': unknown unit '%s' (use bpw, B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)", s,
                       end);
    if (bytes > 1.8e19) return tq_fail(TQ_ERR_ARG, "budget '%s': too large", s);
    *out = (uint64_t)bytes;
    return TQ_OK;
}

tq_status tq_alloc_rules_parse(const char* text, const char* what, tq_alloc_rule** rules, int* n)
{
    if (!text || !rules || !n) return tq_fail(TQ_ERR_ARG, "rules: NULL argument");
    *rules = NULL;
    *n = 0;
    int cap = 0;
    int line = 0;
    const char* p = text;
    while (*p) {
        line++;
        const char* e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char buf[1024];
        if (len >= sizeof buf) {
            free(*rules);
            *rules = NULL;
            *n = 0;
            return tq_fail(TQ_ERR_FORMAT, "%s line %d: line too long", what, line);
        }
        memcpy(buf, p, len);
        buf[len] = 0;
        char* h = strchr(buf, '#');
        if (h) *h = 0;
        for (char* c = buf; *c; c++)
            if (*c == '=' || *c == '\t' || *c == '\r') *c = ' ';
        char k[TQ_MAX_NAME], c[TQ_CODEC_LABEL], extra[8];
        int got = sscanf(buf, "%255s %23s %7s", k, c, extra);
        if (got == 2) {
            tq_codec cc;
            if (tq_codec_label_parse(c, &cc) != TQ_OK) {
                free(*rules);
                *rules = NULL;
                *n = 0;
                return tq_fail(TQ_ERR_FORMAT, "%s line %d: unknown codec '%s'", what, line, c);
            }
            if (*n == cap) {
                cap = cap ? 2 * cap : 8;
                tq_alloc_rule* nr = realloc(*rules, (size_t)cap * sizeof **rules);
                if (!nr) {
                    free(*rules);
                    *rules = NULL;
                    *n = 0;
                    return tq_fail(TQ_ERR_NOMEM, "rules: out of memory");
                }
                *rules = nr;
            }
            memset(&(*rules)[*n], 0, sizeof **rules);
            snprintf((*rules)[*n].key, sizeof(*rules)[*n].key, "%s", k);
            snprintf((*rules)[*n].codec, sizeof(*rules)[*n].codec, "%s", c);
            (*n)++;
        } else if (got > 0) {
            free(*rules);
            *rules = NULL;
            *n = 0;
            return tq_fail(TQ_ERR_FORMAT, "%s line %d: expected 'ROLE CODEC' or 'TENSOR_GLOB CODEC'", what, line);
        }
        p = e ? e + 1 : p + len;
    }
    return TQ_OK;
}

static const tq_alloc_rule* rule_for(const tq_alloc_opts* o, const char* tensor, const char* role)
{
    for (int r = 0; r < o->n_rules; r++) {
        const tq_alloc_rule* ru = &o->rules[r];
        if (!strcmp(ru->key, role) || !fnmatch(ru->key, tensor, 0)) return ru;
    }
    return NULL;
}

static int codec_allowed(const tq_alloc_opts* o, const char* codec)
{
    if (!o->codecs) return 1;
    for (int i = 0; i < o->n_codecs; i++)
        if (!strcmp(o->codecs[i], codec)) return 1;
    return 0;
}

// ------------------------------------------------------------------------------------------------
// allocation over a table

static int row_cmp(const void* a, const void* b)
{
    const tq_sens_row* x = *(const tq_sens_row* const*)a;
    const tq_sens_row* y = *(const tq_sens_row* const*)b;
    int c = strcmp(x->tensor, y->tensor);
    return c ? c : strcmp(x->codec, y->codec);
}

static int entry_cmp(const void* a, const void* b)
{
    return strcmp(((const tq_alloc_entry*)a)->tensor, ((const tq_alloc_entry*)b)->tensor);
}

tq_status tq_allocate(const tq_sens_table* t, const tq_alloc_opts* o, tq_plan** out)
{
    if (!t || !o || !out) return tq_fail(TQ_ERR_ARG, "tq_allocate: NULL argument");
    *out = NULL;
    if (t->n == 0) return tq_fail(TQ_ERR_ARG, "allocate: the sensitivity table is empty");
    tq_status rc = TQ_OK;
    int64_t n = t->n;
    const tq_sens_row** rows = malloc((size_t)n * sizeof *rows);
    tq_sens_row* extra = calloc((size_t)n, sizeof *extra); /* rule codecs missing from the table */
    int64_t* start = malloc(((size_t)n + 1) * sizeof(int64_t));
    uint64_t* bytes = malloc((size_t)n * sizeof(uint64_t));
    double* omega = malloc((size_t)n * sizeof(double));
    const tq_sens_row** opt = malloc((size_t)n * sizeof *opt);
    int64_t* choice = malloc((size_t)n * sizeof(int64_t));
    tq_plan* p = calloc(1, sizeof *p);
    TQ_GOTO_FAIL(!rows || !extra || !start || !bytes || !omega || !opt || !choice || !p, TQ_ERR_NOMEM, out,
                 "allocate: out of memory (%lld table rows)", (long long)n);
    p->e = calloc((size_t)n, sizeof *p->e);
    TQ_GOTO_FAIL(!p->e, TQ_ERR_NOMEM, out, "allocate: out of memory");
    for (int64_t i = 0; i < n; i++) rows[i] = &t->rows[i];
    qsort(rows, (size_t)n, sizeof *rows, row_cmp);
    int64_t nt = 0, nopt = 0, nextra = 0;
    for (int64_t a = 0; a < n;) {
        int64_t b = a;
        while (b < n && !strcmp(rows[b]->tensor, rows[a]->tensor)) b++;
        for (int64_t k = a + 1; k < b; k++) {
            TQ_GOTO_FAIL(rows[k]->rows != rows[a]->rows || rows[k]->cols != rows[a]->cols, TQ_ERR_FORMAT, out,
                         "allocate: tensor %s has two shapes in the sensitivity table", rows[a]->tensor);
            TQ_GOTO_FAIL(!strcmp(rows[k]->codec, rows[k - 1]->codec), TQ_ERR_FORMAT, out,
                         "allocate: tensor %s lists codec %s twice in the sensitivity table", rows[a]->tensor,
                         rows[k]->codec);
        }
        start[nt] = nopt;
        const tq_alloc_rule* ru = rule_for(o, rows[a]->tensor, rows[a]->role);
        if (ru) {
            int64_t k = a;
            while (k < b && strcmp(rows[k]->codec, ru->codec)) k++;
            if (k < b) {
                opt[nopt++] = rows[k];
            } else {
                tq_codec cc;
                TQ_CHECK_GOTO(tq_codec_label_parse(ru->codec, &cc), out);
                tq_sens_row* x = &extra[nextra++];
                *x = *rows[a];
                snprintf(x->codec, sizeof x->codec, "%s", ru->codec);
                x->bytes = tq_codec_bytes(&cc, x->rows, x->cols);
                x->omega = 0;
                opt[nopt++] = x;
            }
        } else {
            for (int64_t k = a; k < b; k++)
                if (codec_allowed(o, rows[k]->codec)) opt[nopt++] = rows[k];
            TQ_GOTO_FAIL(nopt == start[nt], TQ_ERR_ARG, out,
                         "allocate: no allowed codec for tensor %s (its codecs in the table: %s...): allow one of "
                         "them or add a rule for role %s",
                         rows[a]->tensor, rows[a]->codec, rows[a]->role);
        }
        p->total_weights += rows[a]->rows * rows[a]->cols;
        nt++;
        a = b;
    }
    start[nt] = nopt;
    for (int64_t k = 0; k < nopt; k++) {
        bytes[k] = opt[k]->bytes;
        omega[k] = opt[k]->omega;
    }
    tq_mckp prob = {nt, start, bytes, omega};
    tq_mckp_result res;
    TQ_CHECK_GOTO(tq_mckp_solve(&prob, o->budget_bytes, &o->solver, choice, &res), out);
    p->n = nt;
    for (int64_t i = 0; i < nt; i++) {
        const tq_sens_row* r = opt[choice[i]];
        tq_alloc_entry* e = &p->e[i];
        snprintf(e->tensor, sizeof e->tensor, "%s", r->tensor);
        snprintf(e->role, sizeof e->role, "%s", r->role);
        snprintf(e->codec, sizeof e->codec, "%s", r->codec);
        e->rows = r->rows;
        e->cols = r->cols;
        e->bytes = r->bytes;
        e->omega = r->omega;
    }
    qsort(p->e, (size_t)p->n, sizeof *p->e, entry_cmp);
    p->budget_bytes = o->budget_bytes;
    p->total_bytes = res.bytes;
    p->omega = res.omega;
    p->lower_bound = res.lower_bound;
    p->proven_optimal = res.proven_optimal;
    p->core = res.core;
    p->nodes = res.nodes;
    *out = p;
    p = NULL;
out:
    free(rows);
    free(extra);
    free(start);
    free(bytes);
    free(omega);
    free(opt);
    free(choice);
    tq_plan_free(&p);
    return rc;
}

tq_status tq_plan_uniform(const tq_sens_table* t, const tq_alloc_opts* o, const char* codec, tq_plan** out)
{
    if (!t || !o || !codec || !out) return tq_fail(TQ_ERR_ARG, "tq_plan_uniform: NULL argument");
    *out = NULL;
    tq_sens_table* f = NULL;
    TQ_FORWARD(tq_sens_table_create(&f));
    tq_status rc = TQ_OK;
    /* a filtered table with one row per tensor (all rows where a rule decides), solved without a budget */
    for (int64_t a = 0; a < t->n && rc == TQ_OK;) {
        int64_t b = a;
        int64_t hit = -1, small = a;
        while (b < t->n && !strcmp(t->rows[b].tensor, t->rows[a].tensor)) {
            if (!strcmp(t->rows[b].codec, codec)) hit = b;
            if (t->rows[b].bytes < t->rows[small].bytes) small = b;
            b++;
        }
        if (rule_for(o, t->rows[a].tensor, t->rows[a].role)) {
            for (int64_t k = a; k < b && rc == TQ_OK; k++) rc = tq_sens_table_add(f, &t->rows[k]);
        } else {
            rc = tq_sens_table_add(f, &t->rows[hit >= 0 ? hit : small]);
        }
        a = b;
    }
    tq_alloc_opts u = *o;
    u.codecs = NULL;
    u.n_codecs = 0;
    u.budget_bytes = UINT64_MAX / 4;
    if (rc == TQ_OK) rc = tq_allocate(f, &u, out);
    if (rc == TQ_OK) {
        (*out)->budget_bytes = o->budget_bytes;
        (*out)->lower_bound = -1; /* not a Σ Ω optimum */
        (*out)->proven_optimal = 0;
    }
    tq_sens_table_free(&f);
    return rc;
}

// ------------------------------------------------------------------------------------------------
// plan file

typedef struct {
    char* buf;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_printf(sbuf* s, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf* s, const char* fmt, ...)
{
    if (s->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(s->buf ? s->buf + s->len : NULL, s->buf ? s->cap - s->len : 0, fmt, ap);
        va_end(ap);
        if (k < 0) {
            s->oom = 1;
            return;
        }
        if (s->buf && s->len + (size_t)k < s->cap) {
            s->len += (size_t)k;
            return;
        }
        size_t nc = s->cap ? s->cap * 2 : 4096;
        while (nc < s->len + (size_t)k + 1) nc *= 2;
        char* nb = realloc(s->buf, nc);
        if (!nb) {
            s->oom = 1;
            return;
        }
        s->buf = nb;
        s->cap = nc;
    }
}

tq_status tq_plan_format(const tq_plan* p, char** out, size_t* len)
{
    if (!p || !out) return tq_fail(TQ_ERR_ARG, "tq_plan_format: NULL argument");
    sbuf s = {0};
    double tw = p->total_weights > 0 ? (double)p->total_weights : 1.0;
    double gap = p->omega - p->lower_bound;
    sb_printf(&s, "# tqpipe plan v1\n");
    sb_printf(&s, "# budget %llu bytes (%.4f bpw over %lld weights); total %llu bytes (%.4f bpw)\n",
              (unsigned long long)p->budget_bytes, 8.0 * (double)p->budget_bytes / tw, (long long)p->total_weights,
              (unsigned long long)p->total_bytes, 8.0 * (double)p->total_bytes / tw);
    if (p->lower_bound < 0)
        sb_printf(&s, "# sum omega %.6e; no lower bound (this plan did not minimize sum omega)\n", p->omega);
    else
        sb_printf(&s,
                  "# sum omega %.6e; lower bound %.6e; gap %.3e (%.4f%%); proven optimal: %s (core %lld tensors, %lld nodes)\n",
                  p->omega, p->lower_bound, gap, p->omega > 0 ? 100.0 * gap / p->omega : 0.0,
                  p->proven_optimal ? "yes" : "no", (long long)p->core, (long long)p->nodes);
    for (const char* l = p->notes; *l;) {
        const char* e = strchr(l, '\n');
        int ll = e ? (int)(e - l) : (int)strlen(l);
        sb_printf(&s, "# %.*s\n", ll, l);
        l += ll + (e ? 1 : 0);
    }
    /* per-codec summary */
    for (int64_t i = 0; i < p->n; i++) {
        int seen = 0;
        for (int64_t j = 0; j < i && !seen; j++) seen = !strcmp(p->e[j].codec, p->e[i].codec);
        if (seen) continue;
        int64_t cnt = 0, wts = 0;
        uint64_t by = 0;
        for (int64_t j = i; j < p->n; j++)
            if (!strcmp(p->e[j].codec, p->e[i].codec)) {
                cnt++;
                by += p->e[j].bytes;
                wts += p->e[j].rows * p->e[j].cols;
            }
        sb_printf(&s, "# codec %-8s %6lld tensors %14llu bytes %8.4f bpw\n", p->e[i].codec, (long long)cnt,
                  (unsigned long long)by, wts > 0 ? 8.0 * (double)by / (double)wts : 0.0);
    }
    sb_printf(&s, "# edit freely: one 'TENSOR CODEC' per line; text after '#' is ignored\n");
    size_t w = 0;
    for (int64_t i = 0; i < p->n; i++) {
        size_t l = strlen(p->e[i].tensor);
        if (l > w) w = l;
    }
    for (int64_t i = 0; i < p->n; i++)
        sb_printf(&s, "%-*s %-8s # bytes=%llu omega=%.6e role=%s shape=%lldx%lld\n", (int)w, p->e[i].tensor,
                  p->e[i].codec, (unsigned long long)p->e[i].bytes, p->e[i].omega, p->e[i].role,
                  (long long)p->e[i].rows, (long long)p->e[i].cols);
    if (s.oom) {
        free(s.buf);
        return tq_fail(TQ_ERR_NOMEM, "plan: out of memory");
    }
    *out = s.buf;
    if (len) *len = s.len;
    return TQ_OK;
}

tq_status tq_plan_write(const tq_plan* p, const char* path)
{
    char* text = NULL;
    size_t len = 0;
    TQ_FORWARD(tq_plan_format(p, &text, &len));
    tq_status rc = tq_write_file_atomic(path, text, len);
    free(text);
    return rc;
}

tq_status tq_plan_parse(const char* text, size_t len, const char* what, tq_plan** out)
{
    if (!text || !out) return tq_fail(TQ_ERR_ARG, "tq_plan_parse: NULL argument");
    if (!what) what = "plan";
    *out = NULL;
    tq_status rc = TQ_OK;
    tq_plan* p = calloc(1, sizeof *p);
    int64_t cap = 0;
    int* lines = NULL;
    TQ_GOTO_FAIL(!p, TQ_ERR_NOMEM, out, "plan: out of memory");
    size_t pos = 0;
    int line = 0;
    while (pos < len) {
        line++;
        size_t e = pos;
        while (e < len && text[e] != '\n') e++;
        size_t l = e - pos;
        char buf[1024];
        /* cut the comment first so long comments are fine */
        size_t cl = 0;
        while (cl < l && text[pos + cl] != '#') cl++;
        TQ_GOTO_FAIL(cl >= sizeof buf, TQ_ERR_FORMAT, out, "%s line %d: line too long (%zu bytes before any '#')", what,
                     line, cl);
        memcpy(buf, text + pos, cl);
        buf[cl] = 0;
        TQ_GOTO_FAIL(memchr(buf, 0, cl) != NULL, TQ_ERR_FORMAT, out, "%s line %d: NUL byte", what, line);
        char* tok[3] = {0};
        int nt = 0;
        char* save = NULL;
        for (char* t = strtok_r(buf, " \t\r\v\f", &save); t; t = strtok_r(NULL, " \t\r\v\f", &save)) {
            if (nt < 3) tok[nt] = t;
            nt++;
        }
        pos = e + 1;
        if (nt == 0) continue;
        TQ_GOTO_FAIL(nt != 2, TQ_ERR_FORMAT, out, "%s line %d: expected 'TENSOR CODEC', found %d fields", what, line,
                     nt);
        TQ_GOTO_FAIL(strlen(tok[0]) >= TQ_MAX_NAME, TQ_ERR_FORMAT, out, "%s line %d: tensor name too long", what,
                     line);
        tq_codec cc;
        TQ_GOTO_FAIL(strlen(tok[1]) >= TQ_CODEC_LABEL || tq_codec_label_parse(tok[1], &cc) != TQ_OK, TQ_ERR_FORMAT,
                     out, "%s line %d: unknown codec '%.40s' for tensor %.200s", what, line, tok[1], tok[0]);
        if (p->n == cap) {
            cap = cap ? 2 * cap : 64;
            tq_alloc_entry* ne = realloc(p->e, (size_t)cap * sizeof *ne);
            int* nl = realloc(lines, (size_t)cap * sizeof *nl);
            if (ne) p->e = ne;
            if (nl) lines = nl;
            TQ_GOTO_FAIL(!ne || !nl, TQ_ERR_NOMEM, out, "plan: out of memory");
        }
        tq_alloc_entry* en = &p->e[p->n];
        memset(en, 0, sizeof *en);
        snprintf(en->tensor, sizeof en->tensor, "%s", tok[0]);
        snprintf(en->codec, sizeof en->codec, "%s", tok[1]);
        snprintf(en->role, sizeof en->role, "?");
        lines[p->n] = line;
        p->n++;
    }
    qsort(p->e, (size_t)p->n, sizeof *p->e, entry_cmp);
    for (int64_t i = 1; i < p->n; i++)
        TQ_GOTO_FAIL(!strcmp(p->e[i].tensor, p->e[i - 1].tensor), TQ_ERR_FORMAT, out,
                     "%s: tensor %s is listed twice: keep one line per tensor", what, p->e[i].tensor);
    *out = p;
    p = NULL;
out:
    free(lines);
    tq_plan_free(&p);
    return rc;
}

tq_status tq_plan_load(const char* path, tq_plan** out)
{
    char* text = NULL;
    size_t len = 0;
    TQ_FORWARD(tq_read_file(path, &text, &len));
    tq_status rc = tq_plan_parse(text, len, path, out);
    free(text);
    return rc;
}

const tq_alloc_entry* tq_plan_entry_of(const tq_plan* p, const char* tensor)
{
    if (!p || !tensor) return NULL;
    int64_t lo = 0, hi = p->n - 1;
    while (lo <= hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(p->e[mid].tensor, tensor);
        if (!c) return &p->e[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

const char* tq_plan_codec(const tq_plan* p, const char* tensor)
{
    const tq_alloc_entry* e = tq_plan_entry_of(p, tensor);
    return e ? e->codec : NULL;
}

void tq_plan_free(tq_plan** pp)
{
    if (!pp || !*pp) return;
    free((*pp)->e);
    free(*pp);
    *pp = NULL;
}
