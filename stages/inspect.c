/* inspect.c — `tqpipe inspect PATH [--ranks N] [--verify] [--json] [--list]`: what is in a Hugging Face
 * checkpoint and whether it is whole.
 *
 * Prints (rank 0): the architecture (pipeline/arch.h descriptor from config.json), parameter counts
 * (total and active per token), tensor count, bytes by dtype and by role, the descriptor check
 * (missing / unexpected / wrong-shape tensors), and the shard plan summary for N ranks
 * (pipeline/shardplan.h: units, per-rank bytes min/mean/max, max/mean).
 * --verify reads every byte, spread over the MPI ranks: the shard plan's units (rank-count independent)
 * in file order, cut into one contiguous stretch of about equal bytes per rank (--plan-order: the LPT
 * plan's assignment instead, which interleaves small tensors and reads slower), large sequential preads
 * into bounded buffers, optionally by a reader thread per rank (--reader; pipeline/verify_units.h);
 * XXH3-64 per tensor, NaN/Inf counts (bf16/f16/f32);
 * results gathered on rank 0, which prints a summary, the first offending tensors by name with row and
 * column, and the read throughput per rank and in total.
 * Exit status (identical on every rank): 0 all good; 1 a descriptor mismatch, NaN/Inf, a read error or
 * an unreadable checkpoint; 2 usage.
 *
 *   mpirun -np 4 tqpipe inspect /models/Qwen3.5-122B-A10B --verify
 *   tqpipe inspect out/stories260K --json --verify > report.json
 * llama2.c .bin files are not read here: `tqpipe convert` them to the HF layout first. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "arch.h"         /* defines: tq_arch_from_ckpt, tq_arch_check_ckpt, tq_role_name */
#include "ckpt.h"         /* defines: tq_ckpt_open, tq_ckpt_tensor */
#include "commands.h"
#include "hash.h"         /* defines: tq_xxh_hex */
#include "rt.h"           /* defines: tq_rt_init, tq_rt_agree, tq_progress_* */
#include "shardplan.h"    /* defines: tq_units_from_ckpt, tq_shardplan_assign, tq_shardplan_stats */
#include "status.h"
#include "verify_units.h" /* defines: tq_verify_plan, tq_unit_check */

#define INSPECT_LIST_BAD 10 /* offending tensors named in the text report */

typedef struct {
    const char* path;
    int ranks;          /* plan summary for this many ranks (0: the MPI size) */
    int verify, json, list;
    int lpt;            /* --verify with the LPT shard plan's assignment instead of file order */
    size_t chunk;       /* read size for --verify */
    uint64_t max_unit;  /* shard plan unit size */
    double progress;    /* seconds between progress lines (0: off) */
    int reader;         /* --reader: -1 auto, 0 off, 1 on */
} inspect_opts;

static void usage(FILE* f)
{
    fprintf(f,
            "usage: tqpipe inspect PATH [--ranks N] [--verify] [--json] [--list] [--chunk BYTES]\n"
            "                           [--max-unit BYTES] [--progress SECS] [--plan-order]\n"
            "                           [--reader auto|on|off]\n"
            "  Describe a Hugging Face checkpoint (directory with config.json + *.safetensors, or one\n"
            "  .safetensors file with config.json beside it): architecture, parameter count (total /\n"
            "  active), tensor count, bytes by dtype and by role, descriptor check (missing / unexpected\n"
            "  tensors), shard plan summary for N ranks.\n"
            "  --ranks N        plan summary for N ranks (default: the number of MPI ranks)\n"
            "  --verify         read every byte, spread over the MPI ranks (mpirun -np R): XXH3-64 per\n"
            "                   tensor, NaN/Inf counts (bf16/f16/f32), read throughput per rank;\n"
            "                   exit 1 on any NaN/Inf or read error\n"
            "  --json           machine-readable report on stdout (with --verify: every tensor's xxh3)\n"
            "  --plan-order     --verify reads each rank's units of the LPT shard plan (default: units\n"
            "                   in file order, cut into one contiguous stretch per rank: faster reads)\n"
            "  --list           one line per tensor (name, dtype, shape, bytes, role[, xxh3, nan, inf])\n"
            "  --chunk BYTES    read size per pread for --verify (default 1M; k/M/G suffixes)\n"
            "  --max-unit BYTES shard plan unit size (default 64M)\n"
            "  --progress SECS  progress line interval during --verify (default 10, 0 = off)\n"
            "  --reader MODE    --verify reads ahead in a second thread per rank: on, off, or auto\n"
            "                   (default: on when the launcher bound the rank to >= 2 CPUs, e.g.\n"
            "                   srun -c 2; off under mpirun's default one-core-per-rank binding)\n"
            "  A llama2.c .bin checkpoint must be converted first: tqpipe convert MODEL.bin OUT_DIR\n"
            "exit status: 0 ok, 1 problems found or unreadable input, 2 usage\n");
}

static int parse_size(const char* s, uint64_t* out)
{
    char* end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0) return -1;
    double mul = 1;
    if (*end == 'k' || *end == 'K') mul = 1024.0, end++;
    else if (*end == 'm' || *end == 'M') mul = 1048576.0, end++;
    else if (*end == 'g' || *end == 'G') mul = 1073741824.0, end++;
    if (*end == 'i' || *end == 'B') end++;
    if (*end == 'B') end++;
    if (*end) return -1;
    *out = (uint64_t)(v * mul);
    return 0;
}

// ------------------------------------------------------------------------------------------------
// formatting

static const char* human(char* buf, size_t cap, double b)
{
    if (b >= 1e12) snprintf(buf, cap, "%.2f TB", b / 1e12);
    else if (b >= 1e9) snprintf(buf, cap, "%.2f GB", b / 1e9);
    else if (b >= 1e6) snprintf(buf, cap, "%.2f MB", b / 1e6);
    else if (b >= 1e3) snprintf(buf, cap, "%.1f kB", b / 1e3);
    else snprintf(buf, cap, "%.0f B", b);
    return buf;
}

static const char* human_bin(char* buf, size_t cap, uint64_t b) /* exact binary sizes: 64 MiB */
{
    if (b && b % ((uint64_t)1 << 30) == 0) snprintf(buf, cap, "%" PRIu64 " GiB", b >> 30);
    else if (b && b % ((uint64_t)1 << 20) == 0) snprintf(buf, cap, "%" PRIu64 " MiB", b >> 20);
    else if (b && b % 1024 == 0) snprintf(buf, cap, "%" PRIu64 " KiB", b >> 10);
    else snprintf(buf, cap, "%" PRIu64 " B", b);
    return buf;
}

static const char* grouped(char* buf, size_t cap, int64_t v) /* 122,111,526,912 */
{
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%" PRId64, v < 0 ? -v : v);
    size_t n = strlen(tmp), o = 0;
    if (v < 0 && o + 1 < cap) buf[o++] = '-';
    for (size_t i = 0; i < n && o + 2 < cap; i++) {
        buf[o++] = tmp[i];
        if ((n - 1 - i) % 3 == 0 && i + 1 < n) buf[o++] = ',';
    }
    buf[o] = '\0';
    return buf;
}

static void shape_str(char* dst, size_t cap, const tq_tensor_info* t)
{
    int n = snprintf(dst, cap, "[");
    for (int d = 0; d < t->ndim && n >= 0 && (size_t)n < cap; d++)
        n += snprintf(dst + n, cap - (size_t)n, "%s%" PRId64, d ? "," : "", t->shape[d]);
    if (n >= 0 && (size_t)n < cap) snprintf(dst + n, cap - (size_t)n, "]");
}

// ------------------------------------------------------------------------------------------------
// inventory

#define ROLE_UNKNOWN TQ_ROLE_COUNT       /* not in the descriptor (or no descriptor) */
#define ROLE_IGNORED (TQ_ROLE_COUNT + 1) /* vision tower, MTP head, inv_freq */
#define N_ROLE_SLOTS (TQ_ROLE_COUNT + 2)

static const char* role_label(int r)
{
    if (r == ROLE_UNKNOWN) return "unknown";
    if (r == ROLE_IGNORED) return "ignored";
    return tq_role_name((tq_role)r);
}

/* The descriptor's name for a checkpoint name ("model." vs "model.language_model." prefix). */
static int role_of(const tq_arch* a, const char* name)
{
    if (tq_arch_is_ignored_name(name)) return ROLE_IGNORED;
    if (!a) return ROLE_UNKNOWN;
    const tq_arch_tensor* t = tq_arch_find(a, name);
    if (!t) {
        static const char lm[] = "model.language_model.";
        char buf[TQ_MAX_NAME + 32];
        if (!strncmp(name, lm, sizeof lm - 1)) snprintf(buf, sizeof buf, "model.%s", name + sizeof lm - 1);
        else if (!strncmp(name, "model.", 6)) snprintf(buf, sizeof buf, "%s%s", lm, name + 6);
        else return ROLE_UNKNOWN;
        t = tq_arch_find(a, buf);
    }
    return t ? (int)t->role : ROLE_UNKNOWN;
}

typedef struct {
    int64_t count;
    uint64_t bytes;
    int64_t params;
} tally;

/* Per-tensor verification result, aggregated from its units. */
typedef struct {
    uint64_t xxh;
    int64_t nan, inf;
    int64_t bad_row, bad_col; /* first NaN/Inf, -1 when none */
    int status;
    int64_t bad_unit_row0, bad_unit_rows; /* first failed unit's rows */
} tensor_check;

typedef struct {
    tq_rt* rt;
    inspect_opts o;
    tq_ckpt* ckpt;
    tq_arch* arch;
    char arch_err[1024];
    int check_ok;
    char check_msg[4096];
    tally by_dtype[4];
    tally by_role[N_ROLE_SLOTS];
    int* role;               /* [n tensors] */
    int64_t params_files;
    uint64_t bytes_total;
    tq_unitlist* units;
    int plan_ranks;
    tq_plan_stats plan_st;
    /* verify (rank 0) */
    int verified;
    tq_verify_stats vtot;
    tq_verify_stats* vrank;
    tensor_check* tc;        /* [n tensors] */
    int64_t bad_tensors, failed_tensors;
} inspect_state;

static void inspect_free(inspect_state* s)
{
    tq_ckpt_free(&s->ckpt);
    tq_arch_free(&s->arch);
    tq_unitlist_free(&s->units);
    free(s->role);
    free(s->vrank);
    free(s->tc);
}

static tq_status gather_inventory(inspect_state* s)
{
    int64_t n = tq_ckpt_count(s->ckpt);
    s->role = calloc((size_t)(n ? n : 1), sizeof *s->role);
    if (!s->role) return tq_fail(TQ_ERR_NOMEM, "inspect: out of memory");
    if (tq_arch_from_ckpt(s->ckpt, &s->arch) != TQ_OK) {
        snprintf(s->arch_err, sizeof s->arch_err, "%s", tq_last_error());
        s->arch = NULL;
    }
    if (s->arch) {
        s->check_ok = tq_arch_check_ckpt(s->arch, s->ckpt) == TQ_OK;
        if (!s->check_ok) snprintf(s->check_msg, sizeof s->check_msg, "%s", tq_last_error());
    }
    for (int64_t i = 0; i < n; i++) {
        const tq_tensor_info* t = tq_ckpt_tensor(s->ckpt, i);
        int r = role_of(s->arch, t->name);
        s->role[i] = r;
        int64_t numel = tq_tensor_numel(t);
        tally* d = &s->by_dtype[t->dtype < 4 ? t->dtype : 0];
        d->count++;
        d->bytes += t->nbytes;
        d->params += numel;
        s->by_role[r].count++;
        s->by_role[r].bytes += t->nbytes;
        s->by_role[r].params += numel;
        if (r != ROLE_IGNORED) s->params_files += numel;
        s->bytes_total += t->nbytes;
    }
    return TQ_OK;
}

static tq_status plan_summary(inspect_state* s)
{
    TQ_FORWARD(tq_units_from_ckpt(s->ckpt, s->o.max_unit, 1, &s->units));
    s->plan_ranks = s->o.ranks > 0 ? s->o.ranks : s->rt->size;
    tq_shardplan* p = NULL;
    TQ_FORWARD(tq_shardplan_assign(s->units, s->plan_ranks, &p));
    tq_shardplan_stats(p, &s->plan_st);
    tq_status rc = tq_shardplan_validate(p);
    tq_shardplan_free(&p);
    return rc;
}

/* COLLECTIVE: verify with a plan for the actual MPI size; rank 0 aggregates per tensor. */
static tq_status run_verify(inspect_state* s)
{
    uint64_t total = tq_unitlist_bytes(s->units);
    tq_progress* prog = tq_progress_start(s->rt, "verified", (double)total, "B", s->o.progress);
    tq_verify_opts vo = {.chunk_bytes = s->o.chunk, .progress = prog, .log_errors = 1,
                         .reader_thread = s->o.reader >= 0 ? s->o.reader : tq_verify_reader_auto()};
    tq_unit_check* all = NULL;
    tq_status rc;
    if (s->o.lpt) {
        tq_shardplan* p = NULL;
        rc = tq_rt_agree(s->rt, tq_shardplan_assign(s->units, s->rt->size, &p));
        if (rc == TQ_OK) rc = tq_verify_plan(s->rt, s->ckpt, p, &vo, &all, &s->vrank, &s->vtot);
        tq_shardplan_free(&p);
    } else {
        rc = tq_verify_file_order(s->rt, s->ckpt, s->units, &vo, &all, &s->vrank, &s->vtot);
    }
    tq_progress_finish(&prog);
    if (rc != TQ_OK) {
        free(all);
        return rc;
    }
    s->verified = 1;
    if (s->rt->rank != 0) return TQ_OK;

    int64_t n = tq_ckpt_count(s->ckpt);
    s->tc = calloc((size_t)(n ? n : 1), sizeof *s->tc);
    if (!s->tc) {
        free(all);
        return tq_fail(TQ_ERR_NOMEM, "inspect: out of memory");
    }
    const tq_unitlist* u = s->units;
    for (int64_t k = 0; k < u->n_units;) {
        int64_t k1 = k + 1;
        while (k1 < u->n_units && !strcmp(u->units[k1].name, u->units[k].name)) k1++;
        const tq_tensor_info* t = tq_ckpt_find(s->ckpt, u->units[k].name);
        if (t) {
            tensor_check* c = &s->tc[t - tq_ckpt_tensor(s->ckpt, 0)];
            c->bad_row = c->bad_col = -1;
            int64_t cols = tq_tensor_cols(t);
            for (int64_t j = k; j < k1; j++) {
                const tq_unit_check* r = &all[j];
                c->nan += r->nan;
                c->inf += r->inf;
                if (r->first_bad >= 0 && c->bad_row < 0 && cols > 0) {
                    c->bad_row = u->units[j].row0 + r->first_bad / cols;
                    c->bad_col = r->first_bad % cols;
                }
                if (r->status != TQ_OK && c->status == TQ_OK) {
                    c->status = r->status;
                    c->bad_unit_row0 = u->units[j].row0;
                    c->bad_unit_rows = u->units[j].nrows;
                }
            }
            c->xxh = c->status == TQ_OK ? tq_verify_tensor_xxh(all + k, k1 - k) : 0;
            if (c->nan || c->inf) s->bad_tensors++;
            if (c->status != TQ_OK) s->failed_tensors++;
        }
        k = k1;
    }
    free(all);
    return TQ_OK;
}

// ------------------------------------------------------------------------------------------------
// reports (rank 0)

static double rank_rate(const tq_verify_stats* v) { return v->seconds > 0 ? (double)v->bytes / v->seconds : 0.0; }

static void print_text(const inspect_state* s)
{
    char b1[64], b2[64], b3[64];
    const tq_ckpt* c = s->ckpt;
    int64_t n = tq_ckpt_count(c);
    printf("checkpoint    %s (%d file%s, %s of tensor data)\n", tq_ckpt_dir(c), tq_ckpt_file_count(c),
           tq_ckpt_file_count(c) == 1 ? "" : "s", human(b1, sizeof b1, (double)s->bytes_total));
    if (s->arch) {
        char d[512];
        printf("architecture  %s\n", tq_arch_describe(s->arch, d, sizeof d));
        printf("parameters    %s total, %s active per token (descriptor); %s in the files\n",
               grouped(b1, sizeof b1, tq_arch_param_count(s->arch)),
               grouped(b2, sizeof b2, tq_arch_active_param_count(s->arch)), grouped(b3, sizeof b3, s->params_files));
    } else {
        printf("architecture  unknown: %s\n", s->arch_err);
        printf("parameters    %s in the files\n", grouped(b1, sizeof b1, s->params_files));
    }
    printf("tensors       %" PRId64, n - s->by_role[ROLE_IGNORED].count);
    if (s->by_role[ROLE_IGNORED].count)
        printf(" (+ %" PRId64 " ignored: vision tower / MTP / inv_freq)", s->by_role[ROLE_IGNORED].count);
    printf("\n");
    if (s->arch)
        printf("descriptor    %s\n", s->check_ok ? "ok: every expected tensor present with the expected shape" : s->check_msg);
    printf("bytes by dtype\n");
    for (int d = 1; d < 4; d++) {
        const tally* t = &s->by_dtype[d];
        if (!t->count) continue;
        printf("  %-26s %7" PRId64 " tensors %12s %6.2f%%\n", tq_dtype_name((tq_dtype)d), t->count,
               human(b1, sizeof b1, (double)t->bytes), s->bytes_total ? 100.0 * (double)t->bytes / (double)s->bytes_total : 0.0);
    }
    printf("bytes by role\n");
    for (int r = 0; r < N_ROLE_SLOTS; r++) {
        const tally* t = &s->by_role[r];
        if (!t->count) continue;
        printf("  %-26s %7" PRId64 " tensors %12s %6.2f%%  %s params\n", role_label(r), t->count,
               human(b1, sizeof b1, (double)t->bytes),
               s->bytes_total ? 100.0 * (double)t->bytes / (double)s->bytes_total : 0.0, grouped(b2, sizeof b2, t->params));
    }
    const tq_plan_stats* p = &s->plan_st;
    printf("shard plan    %d rank%s, %" PRId64 " units (max unit %s, largest %s): per rank min %s / mean %s / max %s,"
           " max/mean %.3f\n",
           s->plan_ranks, s->plan_ranks == 1 ? "" : "s", p->n_units, human_bin(b1, sizeof b1, s->units->max_unit_bytes),
           human(b2, sizeof b2, (double)p->largest_unit), human(b3, sizeof b3, (double)p->min),
           human((char[64]){0}, 64, p->mean), human((char[64]){0}, 64, (double)p->max), p->max_over_mean);

    if (s->o.list) {
        printf("tensors\n");
        for (int64_t i = 0; i < n; i++) {
            const tq_tensor_info* t = tq_ckpt_tensor(c, i);
            char sh[128];
            shape_str(sh, sizeof sh, t);
            printf("  %s %s %s %" PRIu64 " %s", t->name, tq_dtype_name(t->dtype), sh, t->nbytes, role_label(s->role[i]));
            if (s->verified && s->tc) {
                char hx[17];
                tq_xxh_hex(s->tc[i].xxh, hx);
                printf(" xxh3=%s nan=%" PRId64 " inf=%" PRId64 "%s", hx, s->tc[i].nan, s->tc[i].inf,
                       s->tc[i].status != TQ_OK ? " READ-ERROR" : "");
            }
            printf("\n");
        }
    }

    if (!s->verified) return;
    const tq_verify_stats* v = &s->vtot;
    printf("verify        %" PRId64 " tensors / %" PRId64 " units, %s read in %.3f s on %d rank%s: %s/s total\n",
           n, v->units, human(b1, sizeof b1, (double)v->bytes), v->seconds, s->rt->size, s->rt->size == 1 ? "" : "s",
           human(b2, sizeof b2, v->seconds > 0 ? (double)v->bytes / v->seconds : 0.0));
    for (int r = 0; r < s->rt->size; r++) {
        const tq_verify_stats* w = &s->vrank[r];
        printf("  rank %-4d %" PRId64 " units, %s in %.3f s: %s/s (CPU %.3f s)\n", r, w->units,
               human(b1, sizeof b1, (double)w->bytes), w->seconds, human(b2, sizeof b2, rank_rate(w)), w->cpu_seconds);
    }
    if (!v->nan && !v->inf) {
        printf("  NaN/Inf     none\n");
    } else {
        printf("  NaN/Inf     %" PRId64 " NaN, %" PRId64 " Inf in %" PRId64 " tensor%s:\n", v->nan, v->inf, s->bad_tensors,
               s->bad_tensors == 1 ? "" : "s");
        int shown = 0;
        for (int64_t i = 0; i < n && shown < INSPECT_LIST_BAD; i++) {
            const tensor_check* t = &s->tc[i];
            if (!t->nan && !t->inf) continue;
            printf("    %s: %" PRId64 " NaN, %" PRId64 " Inf (first at row %" PRId64 ", col %" PRId64 ")\n",
                   tq_ckpt_tensor(c, i)->name, t->nan, t->inf, t->bad_row, t->bad_col);
            shown++;
        }
        if (s->bad_tensors > shown) printf("    ... and %" PRId64 " more\n", s->bad_tensors - shown);
    }
    if (!v->failed) {
        printf("  read errors none\n");
    } else {
        printf("  read errors %" PRId64 " unit%s in %" PRId64 " tensor%s:\n", v->failed, v->failed == 1 ? "" : "s",
               s->failed_tensors, s->failed_tensors == 1 ? "" : "s");
        int shown = 0;
        for (int64_t i = 0; i < n && shown < INSPECT_LIST_BAD; i++) {
            const tensor_check* t = &s->tc[i];
            if (t->status == TQ_OK) continue;
            printf("    %s rows [%" PRId64 ", %" PRId64 "): %s\n", tq_ckpt_tensor(c, i)->name, t->bad_unit_row0,
                   t->bad_unit_row0 + t->bad_unit_rows, tq_status_str((tq_status)t->status));
            shown++;
        }
        if (s->failed_tensors > shown) printf("    ... and %" PRId64 " more\n", s->failed_tensors - shown);
        for (int r = 0; r < s->rt->size; r++)
            if (s->vrank[r].first_error[0]) printf("    rank %d: %s\n", r, s->vrank[r].first_error);
    }
    printf("verify        %s\n", (!v->nan && !v->inf && !v->failed) ? "ok" : "FAILED");
}

static json_t* tally_json(const tally* t)
{
    return json_pack("{s:I,s:I,s:I}", "tensors", (json_int_t)t->count, "bytes", (json_int_t)t->bytes, "params",
                     (json_int_t)t->params);
}

static void print_json(const inspect_state* s)
{
    const tq_ckpt* c = s->ckpt;
    int64_t n = tq_ckpt_count(c);
    json_t* root = json_object();
    json_object_set_new(root, "path", json_string(tq_ckpt_dir(c)));
    json_t* files = json_array();
    for (int i = 0; i < tq_ckpt_file_count(c); i++) json_array_append_new(files, json_string(tq_ckpt_file_path(c, i)));
    json_object_set_new(root, "files", files);
    if (s->arch) {
        char d[512];
        json_object_set_new(root, "architecture",
                            json_pack("{s:s,s:s,s:i,s:i,s:i,s:i}", "model_type", s->arch->model_type, "description",
                                      tq_arch_describe(s->arch, d, sizeof d), "layers", s->arch->n_layers, "hidden",
                                      s->arch->hidden, "experts", s->arch->n_experts, "vocab", s->arch->vocab));
        json_object_set_new(root, "params_total", json_integer(tq_arch_param_count(s->arch)));
        json_object_set_new(root, "params_active", json_integer(tq_arch_active_param_count(s->arch)));
        json_object_set_new(root, "descriptor_check",
                            json_pack("{s:b,s:s}", "ok", s->check_ok, "message", s->check_ok ? "" : s->check_msg));
    } else {
        json_object_set_new(root, "architecture", json_null());
        json_object_set_new(root, "architecture_error", json_string(s->arch_err));
    }
    json_object_set_new(root, "params_files", json_integer(s->params_files));
    json_object_set_new(root, "tensors", json_integer(n - s->by_role[ROLE_IGNORED].count));
    json_object_set_new(root, "ignored_tensors", json_integer(s->by_role[ROLE_IGNORED].count));
    json_object_set_new(root, "bytes", json_integer((json_int_t)s->bytes_total));
    json_t* bd = json_object();
    for (int d = 1; d < 4; d++)
        if (s->by_dtype[d].count) json_object_set_new(bd, tq_dtype_name((tq_dtype)d), tally_json(&s->by_dtype[d]));
    json_object_set_new(root, "by_dtype", bd);
    json_t* br = json_object();
    for (int r = 0; r < N_ROLE_SLOTS; r++)
        if (s->by_role[r].count) json_object_set_new(br, role_label(r), tally_json(&s->by_role[r]));
    json_object_set_new(root, "by_role", br);
    const tq_plan_stats* p = &s->plan_st;
    json_object_set_new(root, "plan",
                        json_pack("{s:i,s:I,s:I,s:I,s:I,s:f,s:I,s:f}", "ranks", s->plan_ranks, "units", (json_int_t)p->n_units,
                                  "max_unit_bytes", (json_int_t)s->units->max_unit_bytes, "largest_unit",
                                  (json_int_t)p->largest_unit, "min_bytes", (json_int_t)p->min, "mean_bytes", p->mean,
                                  "max_bytes", (json_int_t)p->max, "max_over_mean", p->max_over_mean));
    if (s->o.list || s->verified) {
        json_t* arr = json_array();
        for (int64_t i = 0; i < n; i++) {
            const tq_tensor_info* t = tq_ckpt_tensor(c, i);
            json_t* shape = json_array();
            for (int d = 0; d < t->ndim; d++) json_array_append_new(shape, json_integer(t->shape[d]));
            json_t* o = json_pack("{s:s,s:s,s:o,s:I,s:s}", "name", t->name, "dtype", tq_dtype_name(t->dtype), "shape",
                                  shape, "bytes", (json_int_t)t->nbytes, "role", role_label(s->role[i]));
            if (s->verified && s->tc) {
                char hx[17];
                tq_xxh_hex(s->tc[i].xxh, hx);
                json_object_set_new(o, "xxh3", s->tc[i].status == TQ_OK ? json_string(hx) : json_null());
                json_object_set_new(o, "nan", json_integer(s->tc[i].nan));
                json_object_set_new(o, "inf", json_integer(s->tc[i].inf));
                if (s->tc[i].status != TQ_OK)
                    json_object_set_new(o, "error", json_string(tq_status_str((tq_status)s->tc[i].status)));
            }
            json_array_append_new(arr, o);
        }
        json_object_set_new(root, "tensor_list", arr);
    }
    if (s->verified) {
        const tq_verify_stats* v = &s->vtot;
        json_t* per = json_array();
        for (int r = 0; r < s->rt->size; r++) {
            const tq_verify_stats* w = &s->vrank[r];
            json_array_append_new(per, json_pack("{s:i,s:I,s:I,s:f,s:f,s:f,s:s}", "rank", r, "units", (json_int_t)w->units,
                                                 "bytes", (json_int_t)w->bytes, "seconds", w->seconds, "cpu_seconds",
                                                 w->cpu_seconds, "bytes_per_s", rank_rate(w), "first_error",
                                                 w->first_error));
        }
        json_object_set_new(root, "verify",
                            json_pack("{s:b,s:i,s:I,s:I,s:f,s:f,s:I,s:I,s:I,s:I,s:I,s:o}", "ok",
                                      !v->nan && !v->inf && !v->failed, "ranks", s->rt->size, "units", (json_int_t)v->units,
                                      "bytes", (json_int_t)v->bytes, "seconds", v->seconds, "bytes_per_s",
                                      v->seconds > 0 ? (double)v->bytes / v->seconds : 0.0, "nan", (json_int_t)v->nan, "inf",
                                      (json_int_t)v->inf, "failed_units", (json_int_t)v->failed, "nonfinite_tensors",
                                      (json_int_t)s->bad_tensors, "failed_tensors", (json_int_t)s->failed_tensors,
                                      "per_rank", per));
    }
    char* text = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    if (text) {
        fputs(text, stdout);
        fputc('\n', stdout);
        free(text);
    }
    json_decref(root);
}

// ------------------------------------------------------------------------------------------------
// command

static int parse_args(int argc, char** argv, inspect_opts* o)
{
    memset(o, 0, sizeof *o);
    o->progress = 10;
    o->reader = -1;
    o->chunk = TQ_VERIFY_DEFAULT_CHUNK;
    o->max_unit = 0;
    for (int i = 1; i < argc; i++) {
        const char* a = argv[i];
        const char* v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t x = 0;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--verify")) {
            o->verify = 1;
        } else if (!strcmp(a, "--json")) {
            o->json = 1;
        } else if (!strcmp(a, "--plan-order")) {
            o->lpt = 1;
        } else if (!strcmp(a, "--list")) {
            o->list = 1;
        } else if (!strcmp(a, "--ranks") && v) {
            char* end = NULL;
            long r = strtol(v, &end, 10);
            if (*end || r < 1 || r > TQ_PLAN_MAX_RANKS) {
                fprintf(stderr, "tqpipe inspect: --ranks wants 1..%d, got '%s'\n", TQ_PLAN_MAX_RANKS, v);
                return 2;
            }
            o->ranks = (int)r;
            i++;
        } else if ((!strcmp(a, "--chunk") || !strcmp(a, "--max-unit")) && v) {
            if (parse_size(v, &x) || x == 0) {
                fprintf(stderr, "tqpipe inspect: %s wants a byte count like 4M, got '%s'\n", a, v);
                return 2;
            }
            if (!strcmp(a, "--chunk")) o->chunk = (size_t)x;
            else o->max_unit = x;
            i++;
        } else if (!strcmp(a, "--reader") && v) {
            if (!strcmp(v, "auto")) o->reader = -1;
            else if (!strcmp(v, "on")) o->reader = 1;
            else if (!strcmp(v, "off")) o->reader = 0;
            else {
                fprintf(stderr, "tqpipe inspect: --reader wants auto, on or off, got '%s'\n", v);
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--progress") && v) {
            char* end = NULL;
            o->progress = strtod(v, &end);
            if (*end || o->progress < 0) {
                fprintf(stderr, "tqpipe inspect: --progress wants seconds >= 0, got '%s'\n", v);
                return 2;
            }
            i++;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "tqpipe inspect: unknown or incomplete option '%s'\n\n", a);
            usage(stderr);
            return 2;
        } else if (!o->path) {
            o->path = a;
        } else {
            fprintf(stderr, "tqpipe inspect: more than one PATH ('%s', '%s')\n", o->path, a);
            return 2;
        }
    }
    if (!o->path) {
        usage(stderr);
        return 2;
    }
    return -1; /* go on */
}

/* A llama2.c .bin (or anything that is neither a directory nor a .safetensors file). */
static tq_status check_layout(const char* path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return tq_fail(TQ_ERR_NOTFOUND, "%s: %s; give a checkpoint directory or a .safetensors file", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) return TQ_OK;
    size_t n = strlen(path);
    if (n >= 12 && !strcmp(path + n - 12, ".safetensors")) return TQ_OK;
    return tq_fail(TQ_ERR_UNSUPPORTED,
                   "%s is not a Hugging Face checkpoint (directory with config.json + *.safetensors); for a "
                   "llama2.c .bin run `tqpipe convert %s OUT_DIR` first, then `tqpipe inspect OUT_DIR`",
                   path, path);
}

int tq_cmd_inspect(int argc, char** argv)
{
    inspect_opts o;
    int prc = parse_args(argc, argv, &o);
    if (prc >= 0) return prc;

    tq_rt rt;
    if (tq_rt_init(&rt, &argc, &argv) != TQ_OK) {
        fprintf(stderr, "tqpipe inspect: %s\n", tq_last_error());
        return 1;
    }
    inspect_state s;
    memset(&s, 0, sizeof s);
    s.rt = &rt;
    s.o = o;
    tq_status rc = check_layout(o.path);
    if (rc == TQ_OK) rc = tq_ckpt_open(o.path, &s.ckpt);
    if (rc == TQ_OK) rc = gather_inventory(&s);
    if (rc == TQ_OK) rc = plan_summary(&s);
    rc = tq_rt_agree(&rt, rc);
    if (rc == TQ_OK && o.verify) rc = run_verify(&s);
    int code = 0;
    if (rc != TQ_OK) {
        if (rt.rank == 0) fprintf(stderr, "tqpipe inspect: %s (%s)\n", tq_last_error(), tq_status_str(rc));
        code = 1;
    } else {
        if (rt.rank == 0) {
            if (o.json) print_json(&s);
            else print_text(&s);
            fflush(stdout);
        }
        if (s.arch && !s.check_ok) code = 1;
        if (s.verified && (s.vtot.nan || s.vtot.inf || s.vtot.failed)) code = 1;
        if (rt.rank == 0 && code)
            fprintf(stderr, "tqpipe inspect: %s: %s\n", o.path,
                    s.arch && !s.check_ok ? "the tensors do not match the architecture descriptor"
                                          : "verification found NaN/Inf values or unreadable data");
    }
    inspect_free(&s);
    tq_rt_finalize(&rt);
    return code;
}
