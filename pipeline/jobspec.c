/* jobspec.c — job file parser (see jobspec.h for the format). libyaml's document API gives a node
 * tree with line marks, so each check below can say exactly where the problem is. Every key is checked
 * against a fixed list per mapping; values are typed and range-checked here, so the stages never see
 * an impossible option. */
#include "jobspec.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include "arch.h"   /* defines: tq_role_parse, tq_role_name */
#include "codec.h"  /* defines: tq_codec_parse */
#include "fileio.h"
#include "stage_fmt.h" /* defines: tq_fmt */ /* defines: tq_read_file, tq_file_exists */

static const char* const stage_names[TQ_STAGE_COUNT] = {"ingest", "calibrate", "allocate", "quantize",
                                                        "pack", "validate", "publish"};

const char* tq_stage_name(tq_stage_id s) { return (s >= 0 && s < TQ_STAGE_COUNT) ? stage_names[s] : "?"; }

tq_stage_id tq_stage_parse(const char* name)
{
    for (int i = 0; i < TQ_STAGE_COUNT; i++)
        if (!strcmp(name, stage_names[i])) return (tq_stage_id)i;
    return TQ_STAGE_COUNT;
}

// ------------------------------------------------------------------------------------------------
// value parsers shared with the CLI

int tq_parse_size(const char* s, uint64_t* out)
{
    if (!s || !*s) return -1;
    errno = 0;
    char* end = NULL;
    double v = strtod(s, &end);
    if (errno || end == s || !(v >= 0) || !isfinite(v)) return -1;
    while (*end == ' ') end++;
    double mul = 1;
    if (*end) {
        static const struct { const char* suf; double mul; } sufs[] = {
            {"B", 1}, {"K", 1e3}, {"KB", 1e3}, {"M", 1e6}, {"MB", 1e6}, {"G", 1e9}, {"GB", 1e9}, {"T", 1e12},
            {"TB", 1e12}, {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0},
            {"TiB", 1099511627776.0}};
        int found = 0;
        for (size_t i = 0; i < sizeof sufs / sizeof sufs[0]; i++)
            if (!strcmp(end, sufs[i].suf)) {
                mul = sufs[i].mul;
                found = 1;
                break;
            }
        if (!found) return -1;
    }
    v *= mul;
    if (v > 1.8e19) return -1;
    *out = (uint64_t)llround(v);
    return 0;
}

static int all_digits(const char* s, size_t n)
{
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i])) return 0;
    return 1;
}

int tq_slurm_time_valid(const char* s)
{
    /* MM | MM:SS | HH:MM:SS | D-HH | D-HH:MM | D-HH:MM:SS ; also "UNLIMITED" */
    if (!s || !*s) return 0;
    if (!strcmp(s, "UNLIMITED") || !strcmp(s, "INFINITE")) return 1;
    const char* p = s;
    const char* dash = strchr(s, '-');
    if (dash) {
        if (!all_digits(s, (size_t)(dash - s))) return 0;
        p = dash + 1;
    }
    int fields = 0;
    const char* q = p;
    while (1) {
        const char* c = strchr(q, ':');
        size_t n = c ? (size_t)(c - q) : strlen(q);
        if (!all_digits(q, n) || n > 4) return 0;
        if (fields > 0 && atoi(q) >= 60) return 0;
        fields++;
        if (!c) break;
        q = c + 1;
    }
    if (dash) return fields >= 1 && fields <= 3;
    return fields >= 1 && fields <= 3;
}

// ------------------------------------------------------------------------------------------------
// parser context

typedef struct {
    yaml_document_t* doc;
    const char* path;
    tq_job* job;
} pctx;

static int line_of(const yaml_node_t* n) { return n ? (int)n->start_mark.line + 1 : 0; }

static tq_status perr(const pctx* c, const yaml_node_t* n, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));
static tq_status perr(const pctx* c, const yaml_node_t* n, const char* fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return tq_fail(TQ_ERR_FORMAT, "%s:%d: %s", c->path, line_of(n), msg);
}

static const char* scalar(const yaml_node_t* n)
{
    return (n && n->type == YAML_SCALAR_NODE) ? (const char*)n->data.scalar.value : NULL;
}

static const char* type_name(const yaml_node_t* n)
{
    if (!n) return "nothing";
    switch (n->type) {
    case YAML_SCALAR_NODE: return "a scalar";
    case YAML_SEQUENCE_NODE: return "a list";
    case YAML_MAPPING_NODE: return "a mapping";
    default: return "nothing";
    }
}

/* Expand ${VAR} and ${VAR:-default} from the environment. */
static tq_status expand_env(const pctx* c, const yaml_node_t* n, const char* in, char* out, size_t cap)
{
    size_t o = 0;
    for (const char* p = in; *p;) {
        if (p[0] == '$' && p[1] == '{') {
            const char* close = strchr(p, '}');
            if (!close) return perr(c, n, "unterminated ${...} in '%s'", in);
            char var[256];
            size_t vl = (size_t)(close - p - 2);
            if (vl >= sizeof var) return perr(c, n, "variable name too long in '%s'", in);
            memcpy(var, p + 2, vl);
            var[vl] = '\0';
            const char* def = NULL;
            char* colon = strstr(var, ":-");
            if (colon) {
                *colon = '\0';
                def = colon + 2;
            }
            const char* val = getenv(var);
            if (!val || (!*val && def)) val = def;
            if (!val) return perr(c, n, "environment variable %s is not set (used in '%s'); set it or write ${%s:-default}", var, in, var);
            size_t l = strlen(val);
            if (o + l >= cap) return perr(c, n, "value too long: '%s'", in);
            memcpy(out + o, val, l);
            o += l;
            p = close + 1;
        } else {
            if (o + 1 >= cap) return perr(c, n, "value too long: '%s'", in);
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
    return TQ_OK;
}

static tq_status get_str(const pctx* c, const yaml_node_t* n, const char* key, char* out, size_t cap)
{
    const char* s = scalar(n);
    if (!s) return perr(c, n, "'%s' must be a string, not %s", key, type_name(n));
    char tmp[TQ_PATH_MAX];
    TQ_FORWARD(expand_env(c, n, s, tmp, sizeof tmp));
    if (strlen(tmp) >= cap) return perr(c, n, "'%s' is too long (max %zu characters)", key, cap - 1);
    strcpy(out, tmp);
    return TQ_OK;
}

static tq_status get_int(const pctx* c, const yaml_node_t* n, const char* key, long long lo, long long hi,
                         long long* out)
{
    const char* s = scalar(n);
    if (!s) return perr(c, n, "'%s' must be an integer, not %s", key, type_name(n));
    if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return perr(c, n, "'%s' must be an integer, not the string \"%s\"", key, s);
    errno = 0;
    char* end = NULL;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end) return perr(c, n, "'%s' must be an integer, got '%s'", key, s);
    if (v < lo || v > hi) return perr(c, n, "'%s' = %lld is out of range [%lld, %lld]", key, v, lo, hi);
    *out = v;
    return TQ_OK;
}

static tq_status get_double(const pctx* c, const yaml_node_t* n, const char* key, double lo, double hi,
                            double* out)
{
    const char* s = scalar(n);
    if (!s || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return perr(c, n, "'%s' must be a number, not %s", key, s ? "a quoted string" : type_name(n));
    errno = 0;
    char* end = NULL;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return perr(c, n, "'%s' must be a number, got '%s'", key, s);
    if (v < lo || v > hi) return perr(c, n, "'%s' = %g is out of range [%g, %g]", key, v, lo, hi);
    *out = v;
    return TQ_OK;
}

static tq_status get_bool(const pctx* c, const yaml_node_t* n, const char* key, int* out)
{
    const char* s = scalar(n);
    if (s && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
        if (!strcmp(s, "true") || !strcmp(s, "yes") || !strcmp(s, "on")) {
            *out = 1;
            return TQ_OK;
        }
        if (!strcmp(s, "false") || !strcmp(s, "no") || !strcmp(s, "off")) {
            *out = 0;
            return TQ_OK;
        }
    }
    return perr(c, n, "'%s' must be true or false, got %s%s%s", key, s ? "'" : "", s ? s : type_name(n), s ? "'" : "");
}

static tq_status get_size(const pctx* c, const yaml_node_t* n, const char* key, uint64_t lo, uint64_t* out)
{
    const char* s = scalar(n);
    if (!s) return perr(c, n, "'%s' must be a size (bytes, or e.g. 2GB, 512MiB), not %s", key, type_name(n));
    uint64_t v;
    if (tq_parse_size(s, &v)) return perr(c, n, "'%s': cannot read '%s' as a size (bytes, or e.g. 2GB, 512MiB)", key, s);
    if (v < lo) return perr(c, n, "'%s' = %s is too small (minimum %llu bytes)", key, s, (unsigned long long)lo);
    *out = v;
    return TQ_OK;
}

static tq_status check_codec(const pctx* c, const yaml_node_t* n, const char* name, int group)
{
    tq_codec cd;
    if (tq_codec_parse(name, group, &cd) != TQ_OK) {
        char why[1024];
        tq_fmt(why, sizeof why, "%s", tq_last_error());
        return perr(c, n, "unknown codec or group '%s' (group %d): %s", name, group, why);
    }
    return TQ_OK;
}

static tq_status get_str_list(const pctx* c, const yaml_node_t* n, const char* key, char (*out)[16], int* count)
{
    if (!n || n->type != YAML_SEQUENCE_NODE) return perr(c, n, "'%s' must be a list, not %s", key, type_name(n));
    *count = 0;
    for (yaml_node_item_t* it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
        yaml_node_t* e = yaml_document_get_node(c->doc, *it);
        if (*count >= TQ_JOB_MAX_LIST) return perr(c, e, "'%s' has more than %d entries", key, TQ_JOB_MAX_LIST);
        TQ_FORWARD(get_str(c, e, key, out[*count], 16));
        (*count)++;
    }
    return TQ_OK;
}

/* Absolute path of an input file: relative to the job file's folder, else to the launch dir. */
static tq_status resolve_input(const pctx* c, const yaml_node_t* n, const char* key, const char* rel, char* out,
                               int must_exist)
{
    char cand[2][TQ_PATH_MAX];
    int ncand = 0;
    if (rel[0] == '/') {
        tq_fmt(cand[0], TQ_PATH_MAX, "%s", rel);
        ncand = 1;
    } else {
        tq_fmt(cand[0], TQ_PATH_MAX, "%s/%s", c->job->job_dir, rel);
        tq_fmt(cand[1], TQ_PATH_MAX, "%s/%s", c->job->launch_dir, rel);
        ncand = 2;
    }
    for (int i = 0; i < ncand; i++)
        if (tq_file_exists(cand[i])) {
            char* real = realpath(cand[i], NULL);
            tq_fmt(out, TQ_PATH_MAX, "%s", real ? real : cand[i]);
            free(real);
            return TQ_OK;
        }
    if (must_exist) {
        tq_status rc = perr(c, n, "%s '%s' not found (looked in %s%s%s)", key, rel, cand[0], ncand > 1 ? " and " : "",
                            ncand > 1 ? cand[1] : "");
        (void)rc;
        char msg[2048];
        tq_fmt(msg, sizeof msg, "%s", tq_last_error());
        return tq_fail(TQ_ERR_NOTFOUND, "%s", msg);
    }
    tq_fmt(out, TQ_PATH_MAX, "%s", cand[0]);
    return TQ_OK;
}

static void resolve_output(const tq_job* job, const char* rel, char* out)
{
    if (rel[0] == '/') tq_fmt(out, TQ_PATH_MAX, "%s", rel);
    else tq_fmt(out, TQ_PATH_MAX, "%s/%s", job->launch_dir, rel);
}

/* Iterate a mapping, checking each key against `known`; duplicate keys are an error. */
typedef tq_status (*pair_fn)(pctx* c, const char* key, yaml_node_t* k, yaml_node_t* v, void* arg);

static tq_status for_each_pair(pctx* c, yaml_node_t* map, const char* where, const char* const* known, pair_fn fn,
                               void* arg)
{
    if (!map || map->type != YAML_MAPPING_NODE) return perr(c, map, "%s must be a mapping (key: value), not %s", where, type_name(map));
    for (yaml_node_pair_t* p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t* k = yaml_document_get_node(c->doc, p->key);
        yaml_node_t* v = yaml_document_get_node(c->doc, p->value);
        const char* key = scalar(k);
        if (!key) return perr(c, k, "keys in %s must be plain names", where);
        int ok = 0;
        for (int i = 0; known[i]; i++)
            if (!strcmp(known[i], key)) ok = 1;
        if (!ok) {
            char list[1024] = "";
            for (int i = 0; known[i]; i++) {
                strncat(list, known[i], sizeof list - strlen(list) - 3);
                if (known[i + 1]) strncat(list, ", ", sizeof list - strlen(list) - 1);
            }
            return perr(c, k, "unknown key '%s' in %s (known: %s)", key, where, list);
        }
        for (yaml_node_pair_t* q = map->data.mapping.pairs.start; q < p; q++) {
            const char* prev = scalar(yaml_document_get_node(c->doc, q->key));
            if (prev && !strcmp(prev, key)) return perr(c, k, "duplicate key '%s' in %s", key, where);
        }
        TQ_FORWARD(fn(c, key, k, v, arg));
    }
    return TQ_OK;
}

// ------------------------------------------------------------------------------------------------
// resources

static const char* const res_keys[] = {"nodes", "ntasks", "ntasks_per_node", "cpus_per_task", "gpus_per_task",
                                       "time", "partition", "account", "qos", "mem", "constraint", NULL};

static tq_status res_pair(pctx* c, const char* key, yaml_node_t* k, yaml_node_t* v, void* arg)
{
    tq_resources* r = (tq_resources*)arg;
    long long x;
    if (!strcmp(key, "nodes")) {
        TQ_FORWARD(get_int(c, v, key, 1, 100000, &x));
        r->nodes = (int)x;
    } else if (!strcmp(key, "ntasks")) {
        TQ_FORWARD(get_int(c, v, key, 1, 1000000, &x));
        r->ntasks = (int)x;
    } else if (!strcmp(key, "ntasks_per_node")) {
        TQ_FORWARD(get_int(c, v, key, 1, 1024, &x));
        r->ntasks_per_node = (int)x;
    } else if (!strcmp(key, "cpus_per_task")) {
        TQ_FORWARD(get_int(c, v, key, 1, 4096, &x));
        r->cpus_per_task = (int)x;
    } else if (!strcmp(key, "gpus_per_task")) {
        TQ_FORWARD(get_int(c, v, key, 0, 16, &x));
        r->gpus_per_task = (int)x;
    } else if (!strcmp(key, "time")) {
        TQ_FORWARD(get_str(c, v, key, r->time, sizeof r->time));
        if (!tq_slurm_time_valid(r->time))
            return perr(c, v, "'time' = '%s' is not a Slurm time (MM, HH:MM:SS, D-HH:MM:SS)", r->time);
    } else if (!strcmp(key, "partition")) {
        TQ_FORWARD(get_str(c, v, key, r->partition, sizeof r->partition));
    } else if (!strcmp(key, "account")) {
        TQ_FORWARD(get_str(c, v, key, r->account, sizeof r->account));
    } else if (!strcmp(key, "qos")) {
        TQ_FORWARD(get_str(c, v, key, r->qos, sizeof r->qos));
    } else if (!strcmp(key, "constraint")) {
        TQ_FORWARD(get_str(c, v, key, r->constraint, sizeof r->constraint));
    } else if (!strcmp(key, "mem")) {
        TQ_FORWARD(get_str(c, v, key, r->mem, sizeof r->mem));
        size_t l = strlen(r->mem);
        size_t d = 0;
        while (d < l && isdigit((unsigned char)r->mem[d])) d++;
        if (d == 0 || (l - d > 1) || (l - d == 1 && !strchr("KMGT", r->mem[d])) || atoll(r->mem) <= 0)
            return perr(c, v, "'mem' = '%s' is not a Slurm memory size (e.g. 64G, 500M)", r->mem);
    }
    (void)k;
    return TQ_OK;
}

static void res_merge(tq_resources* dst, const tq_resources* over)
{
    if (over->nodes) dst->nodes = over->nodes;
    if (over->ntasks) dst->ntasks = over->ntasks;
    if (over->ntasks_per_node) dst->ntasks_per_node = over->ntasks_per_node;
    if (over->cpus_per_task) dst->cpus_per_task = over->cpus_per_task;
    if (over->gpus_per_task) dst->gpus_per_task = over->gpus_per_task;
    if (over->time[0]) strcpy(dst->time, over->time);
    if (over->partition[0]) strcpy(dst->partition, over->partition);
    if (over->account[0]) strcpy(dst->account, over->account);
    if (over->qos[0]) strcpy(dst->qos, over->qos);
    if (over->mem[0]) strcpy(dst->mem, over->mem);
    if (over->constraint[0]) strcpy(dst->constraint, over->constraint);
}

// ------------------------------------------------------------------------------------------------
// stages

typedef struct {
    tq_stage_id id;
    tq_resources res;
    int res_set;
} stage_arg;

static const char* const rule_keys[] = {"role", "match", "codec", "group", NULL};

static tq_status rule_pair(pctx* c, const char* key, yaml_node_t* k, yaml_node_t* v, void* arg)
{
    tq_codec_rule* r = (tq_codec_rule*)arg;
    long long x;
    (void)k;
    if (!strcmp(key, "role")) {
        TQ_FORWARD(get_str(c, v, key, r->role, sizeof r->role));
        if (tq_role_parse(r->role) == TQ_ROLE_COUNT) {
            char list[1024] = "";
            for (int i = 0; i < TQ_ROLE_COUNT; i++) {
                strncat(list, tq_role_name((tq_role)i), sizeof list - strlen(list) - 3);
                if (i + 1 < TQ_ROLE_COUNT) strncat(list, ", ", sizeof list - strlen(list) - 1);
            }
            return perr(c, v, "unknown role '%s' (known: %s)", r->role, list);
        }
    } else if (!strcmp(key, "match")) {
        TQ_FORWARD(get_str(c, v, key, r->match, sizeof r->match));
    } else if (!strcmp(key, "codec")) {
        TQ_FORWARD(get_str(c, v, key, r->codec, sizeof r->codec));
    } else if (!strcmp(key, "group")) {
        TQ_FORWARD(get_int(c, v, key, 1, 1 << 20, &x));
        r->group = (int)x;
    }
    return TQ_OK;
}

static const char* const ingest_keys[] = {"verify", "check_arch", "resources", NULL};
static const char* const calib_keys[] = {"data", "tokens", "ctx", "parallel", "mem_per_rank", "expert_h", "resources", NULL};
static const char* const alloc_keys[] = {"budget_bpw", "budget_bytes", "allowed", "resources", NULL};
static const char* const quant_keys[] = {"codec", "group", "allowed", "rules", "max_unit_bytes", "device",
                                         "verify_on_resume", "gptq", "act_order", "damp", "resources", NULL};
static const char* const pack_keys[] = {"zstd_level", "shard_size", "resources", NULL};
static const char* const valid_keys[] = {"data", "ctx", "stride", "max_tokens", "kv_codecs", "device", "gpu_weights",
                                         "resources", NULL};
static const char* const publish_keys[] = {"license", "resources", NULL};

static tq_status stage_pair(pctx* c, const char* key, yaml_node_t* k, yaml_node_t* v, void* arg)
{
    stage_arg* sa = (stage_arg*)arg;
    tq_job* j = c->job;
    long long x;
    (void)k;
    if (!strcmp(key, "resources")) {
        sa->res_set = 1;
        return for_each_pair(c, v, "resources", res_keys, res_pair, &sa->res);
    }
    switch (sa->id) {
    case TQ_STAGE_INGEST:
        if (!strcmp(key, "verify")) return get_bool(c, v, key, &j->ingest_verify);
        if (!strcmp(key, "check_arch")) return get_bool(c, v, key, &j->ingest_check_arch);
        break;
    case TQ_STAGE_CALIBRATE:
        if (!strcmp(key, "data")) {
            char rel[TQ_PATH_MAX];
            TQ_FORWARD(get_str(c, v, key, rel, sizeof rel));
            return resolve_input(c, v, "calibration data", rel, j->calib_data, 1);
        }
        if (!strcmp(key, "tokens")) {
            TQ_FORWARD(get_int(c, v, key, 1, (long long)1 << 40, &x));
            j->calib_tokens = x;
            return TQ_OK;
        }
        if (!strcmp(key, "ctx")) {
            TQ_FORWARD(get_int(c, v, key, 1, 1 << 20, &x));
            j->calib_ctx = (int)x;
            return TQ_OK;
        }
        if (!strcmp(key, "parallel")) { /* helper gptqstage: layer-sharded calibration */
            TQ_FORWARD(get_str(c, v, key, j->calib_parallel, sizeof j->calib_parallel));
            if (strcmp(j->calib_parallel, "auto") && strcmp(j->calib_parallel, "seq") && strcmp(j->calib_parallel, "layers"))
                return perr(c, v, "'parallel' = '%s': must be auto, seq or layers", j->calib_parallel);
            return TQ_OK;
        }
        if (!strcmp(key, "mem_per_rank")) return get_size(c, v, key, 1 << 20, &j->calib_mem_per_rank);
        if (!strcmp(key, "expert_h")) {
            char m[8];
            TQ_FORWARD(get_str(c, v, key, m, sizeof m));
            if (strcmp(m, "full") && strcmp(m, "diag")) return perr(c, v, "'expert_h' = '%s': must be full or diag", m);
            j->calib_diag_experts = !strcmp(m, "diag");
            return TQ_OK;
        }
        break;
    case TQ_STAGE_ALLOCATE:
        if (!strcmp(key, "budget_bpw")) return get_double(c, v, key, 0.5, 32, &j->budget_bpw);
        if (!strcmp(key, "budget_bytes")) return get_size(c, v, key, 1, &j->budget_bytes);
        if (!strcmp(key, "allowed")) {
            TQ_FORWARD(get_str_list(c, v, key, j->allowed, &j->n_allowed));
            for (int i = 0; i < j->n_allowed; i++) TQ_FORWARD(check_codec(c, v, j->allowed[i], 0));
            return TQ_OK;
        }
        break;
    case TQ_STAGE_QUANTIZE:
        if (!strcmp(key, "codec")) return get_str(c, v, key, j->codec, sizeof j->codec);
        if (!strcmp(key, "group")) {
            TQ_FORWARD(get_int(c, v, key, 1, 1 << 20, &x));
            if (x != 64 && x != 128 && x != 256) return perr(c, v, "'group' = %lld: must be 64, 128 or 256", x);
            j->group = (int)x;
            return TQ_OK;
        }
        if (!strcmp(key, "allowed")) {
            TQ_FORWARD(get_str_list(c, v, key, j->allowed, &j->n_allowed));
            for (int i = 0; i < j->n_allowed; i++) TQ_FORWARD(check_codec(c, v, j->allowed[i], 0));
            return TQ_OK;
        }
        if (!strcmp(key, "max_unit_bytes")) return get_size(c, v, key, 4096, &j->max_unit_bytes);
        if (!strcmp(key, "device")) {
            TQ_FORWARD(get_str(c, v, key, j->device, sizeof j->device));
            if (strcmp(j->device, "auto") && strcmp(j->device, "cpu") && strcmp(j->device, "gpu"))
                return perr(c, v, "'device' = '%s': must be auto, cpu or gpu", j->device);
            return TQ_OK;
        }
        if (!strcmp(key, "verify_on_resume")) return get_bool(c, v, key, &j->verify_on_resume);
        if (!strcmp(key, "gptq")) return get_bool(c, v, key, &j->gptq); /* helper gptqstage (pipeline/qgptq.h) */
        if (!strcmp(key, "act_order")) return get_bool(c, v, key, &j->gptq_act_order);
        if (!strcmp(key, "damp")) return get_double(c, v, key, 1e-6, 10, &j->gptq_damp);
        if (!strcmp(key, "rules")) {
            if (v->type != YAML_SEQUENCE_NODE) return perr(c, v, "'rules' must be a list of {role|match, codec}, not %s", type_name(v));
            for (yaml_node_item_t* it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
                yaml_node_t* e = yaml_document_get_node(c->doc, *it);
                if (j->n_rules >= TQ_JOB_MAX_RULES) return perr(c, e, "more than %d rules", TQ_JOB_MAX_RULES);
                tq_codec_rule* r = &j->rules[j->n_rules];
                memset(r, 0, sizeof *r);
                r->line = line_of(e);
                TQ_FORWARD(for_each_pair(c, e, "a quantize rule", rule_keys, rule_pair, r));
                if (!r->codec[0]) return perr(c, e, "rule without 'codec'");
                if (!r->role[0] && !r->match[0]) return perr(c, e, "rule needs 'role' or 'match'");
                j->n_rules++;
            }
            return TQ_OK;
        }
        break;
    case TQ_STAGE_PACK:
        if (!strcmp(key, "zstd_level")) {
            TQ_FORWARD(get_int(c, v, key, 0, 22, &x));
            j->zstd_level = (int)x;
            return TQ_OK;
        }
        if (!strcmp(key, "shard_size")) return get_size(c, v, key, 4096, &j->shard_size);
        break;
    case TQ_STAGE_VALIDATE:
        if (!strcmp(key, "data")) {
            char rel[TQ_PATH_MAX];
            TQ_FORWARD(get_str(c, v, key, rel, sizeof rel));
            return resolve_input(c, v, "evaluation data", rel, j->eval_data, 1);
        }
        if (!strcmp(key, "ctx")) {
            TQ_FORWARD(get_int(c, v, key, 2, 1 << 20, &x));
            j->eval_ctx = (int)x;
            return TQ_OK;
        }
        if (!strcmp(key, "stride")) {
            TQ_FORWARD(get_int(c, v, key, 1, 1 << 20, &x));
            j->eval_stride = (int)x;
            return TQ_OK;
        }
        if (!strcmp(key, "max_tokens")) {
            TQ_FORWARD(get_int(c, v, key, 1, (long long)1 << 40, &x));
            j->eval_max_tokens = x;
            return TQ_OK;
        }
        if (!strcmp(key, "kv_codecs")) return get_str_list(c, v, key, j->kv_codecs, &j->n_kv);
        if (!strcmp(key, "device")) { /* GPU forward pass (pipeline/model_gpu.h): auto | cpu | gpu */
            TQ_FORWARD(get_str(c, v, key, j->eval_device, sizeof j->eval_device));
            if (strcmp(j->eval_device, "auto") && strcmp(j->eval_device, "cpu") && strcmp(j->eval_device, "gpu"))
                return perr(c, v, "stages.validate.device must be auto, cpu or gpu, not '%s'", j->eval_device);
            return TQ_OK;
        }
        if (!strcmp(key, "gpu_weights")) { /* how the GPU holds the artifact (pipeline/model_gpu.h tq_gpu_weights) */
            TQ_FORWARD(get_str(c, v, key, j->eval_gpu_weights, sizeof j->eval_gpu_weights));
            const char* const ok[] = {"auto", "packed", "packed-f32", "bf16", "f32"};
            for (int i = 0; i < 5; i++)
                if (!strcmp(j->eval_gpu_weights, ok[i])) return TQ_OK;
            return perr(c, v, "stages.validate.gpu_weights must be auto, packed, packed-f32, bf16 or f32, not '%s'",
                        j->eval_gpu_weights);
        }
        break;
    case TQ_STAGE_PUBLISH:
        if (!strcmp(key, "license")) {
            char rel[TQ_PATH_MAX];
            TQ_FORWARD(get_str(c, v, key, rel, sizeof rel));
            return resolve_input(c, v, "license", rel, j->license, 1);
        }
        break;
    default: break;
    }
    return perr(c, k, "unexpected key '%s' in stages.%s", key, tq_stage_name(sa->id));
}

static const char* const* keys_for(tq_stage_id s)
{
    switch (s) {
    case TQ_STAGE_INGEST: return ingest_keys;
    case TQ_STAGE_CALIBRATE: return calib_keys;
    case TQ_STAGE_ALLOCATE: return alloc_keys;
    case TQ_STAGE_QUANTIZE: return quant_keys;
    case TQ_STAGE_PACK: return pack_keys;
    case TQ_STAGE_VALIDATE: return valid_keys;
    case TQ_STAGE_PUBLISH: return publish_keys;
    default: return NULL;
    }
}

typedef struct {
    stage_arg st[TQ_STAGE_COUNT];
} stages_arg;

static const char* const stage_keys[] = {"ingest", "calibrate", "allocate", "quantize", "pack", "validate", "publish", NULL};

static tq_status stages_pair(pctx* c, const char* key, yaml_node_t* k, yaml_node_t* v, void* arg)
{
    stages_arg* sa = (stages_arg*)arg;
    tq_stage_id id = tq_stage_parse(key);
    c->job->stage[id].enabled = 1;
    c->job->stage[id].line = line_of(k);
    sa->st[id].id = id;
    /* `ingest:` with nothing after it is an empty mapping */
    if (v->type == YAML_SCALAR_NODE && (!strcmp(scalar(v), "") || !strcmp(scalar(v), "~") || !strcmp(scalar(v), "null")))
        return TQ_OK;
    char where[64];
    tq_fmt(where, sizeof where, "stages.%s", key);
    return for_each_pair(c, v, where, keys_for(id), stage_pair, &sa->st[id]);
}

// ------------------------------------------------------------------------------------------------
// top level

typedef struct {
    stages_arg stages;
    tq_resources res;
    char run_rel[TQ_PATH_MAX];
    char out_rel[TQ_PATH_MAX];
    int have_model;
    yaml_node_t* model_node;
    yaml_node_t* stages_node;
} top_arg;

static const char* const top_keys[] = {"version", "name", "description", "model", "tokenizer", "run_dir", "output",
                                       "seed", "resources", "stages", NULL};

static tq_status top_pair(pctx* c, const char* key, yaml_node_t* k, yaml_node_t* v, void* arg)
{
    top_arg* t = (top_arg*)arg;
    tq_job* j = c->job;
    long long x;
    (void)k;
    if (!strcmp(key, "version")) {
        TQ_FORWARD(get_int(c, v, key, 1, 1000, &x));
        if (x != 1) return perr(c, v, "job format version %lld is not supported by this tqpipe (knows 1)", x);
        j->version = (int)x;
    } else if (!strcmp(key, "name")) {
        TQ_FORWARD(get_str(c, v, key, j->name, sizeof j->name));
        for (const char* p = j->name; *p; p++)
            if (!isalnum((unsigned char)*p) && !strchr("-_.", *p))
                return perr(c, v, "'name' = '%s': use letters, digits, '-', '_' or '.' only (it names files and Slurm jobs)", j->name);
        if (!j->name[0]) return perr(c, v, "'name' is empty");
    } else if (!strcmp(key, "description")) {
        TQ_FORWARD(get_str(c, v, key, j->description, sizeof j->description));
    } else if (!strcmp(key, "model")) {
        char rel[TQ_PATH_MAX];
        TQ_FORWARD(get_str(c, v, key, rel, sizeof rel));
        TQ_FORWARD(resolve_input(c, v, "model", rel, j->model, 1));
        size_t l = strlen(j->model);
        j->model_is_llama2c = l > 4 && !strcmp(j->model + l - 4, ".bin");
        t->have_model = 1;
        t->model_node = v;
    } else if (!strcmp(key, "tokenizer")) {
        char rel[TQ_PATH_MAX];
        TQ_FORWARD(get_str(c, v, key, rel, sizeof rel));
        TQ_FORWARD(resolve_input(c, v, "tokenizer", rel, j->tokenizer, 1));
    } else if (!strcmp(key, "run_dir")) {
        TQ_FORWARD(get_str(c, v, key, t->run_rel, sizeof t->run_rel));
        if (!t->run_rel[0]) return perr(c, v, "'run_dir' is empty");
    } else if (!strcmp(key, "output")) {
        TQ_FORWARD(get_str(c, v, key, t->out_rel, sizeof t->out_rel));
        if (!t->out_rel[0]) return perr(c, v, "'output' is empty");
    } else if (!strcmp(key, "seed")) {
        const char* s = scalar(v);
        if (!s || v->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return perr(c, v, "'seed' must be a non-negative integer");
        errno = 0;
        char* end = NULL;
        unsigned long long u = strtoull(s, &end, 0);
        if (errno || end == s || *end || s[0] == '-') return perr(c, v, "'seed' must be a non-negative integer, got '%s'", s);
        j->seed = (uint64_t)u;
    } else if (!strcmp(key, "resources")) {
        return for_each_pair(c, v, "resources", res_keys, res_pair, &t->res);
    } else if (!strcmp(key, "stages")) {
        t->stages_node = v;
        return for_each_pair(c, v, "stages", stage_keys, stages_pair, &t->stages);
    }
    return TQ_OK;
}

static void job_defaults(tq_job* j)
{
    j->version = 1;
    j->seed = 0;
    j->ingest_verify = 1;
    j->ingest_check_arch = 1;
    strcpy(j->codec, "tq4");
    j->group = 128;
    j->max_unit_bytes = 64ull << 20;
    strcpy(j->device, "auto");
    j->verify_on_resume = 1;
    j->zstd_level = 3;
    j->shard_size = 2ull << 30;
    j->calib_ctx = 512;
    strcpy(j->calib_parallel, "auto");
    j->gptq_damp = 0.01;
    j->eval_ctx = 256;
    j->eval_stride = 0;
}

tq_status tq_job_parse(const char* text, const char* path, const char* launch_dir, const char* run_dir_override,
                       tq_job* job)
{
    memset(job, 0, sizeof *job);
    job_defaults(job);
    /* absolute job path and folder */
    char* real = realpath(path, NULL);
    tq_fmt(job->job_path, sizeof job->job_path, "%s", real ? real : path);
    free(real);
    tq_fmt(job->job_dir, sizeof job->job_dir, "%s", job->job_path);
    char* slash = strrchr(job->job_dir, '/');
    if (slash && slash != job->job_dir) *slash = '\0';
    else if (slash) slash[1] = '\0';
    else strcpy(job->job_dir, ".");
    if (launch_dir) tq_fmt(job->launch_dir, sizeof job->launch_dir, "%s", launch_dir);
    else if (!getcwd(job->launch_dir, sizeof job->launch_dir)) strcpy(job->launch_dir, ".");

    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) return tq_fail(TQ_ERR_NOMEM, "%s: cannot initialise the YAML parser", path);
    yaml_parser_set_input_string(&parser, (const unsigned char*)text, strlen(text));
    if (!yaml_parser_load(&parser, &doc)) {
        tq_status rc = tq_fail(TQ_ERR_FORMAT, "%s:%d: YAML syntax error: %s%s%s", path, (int)parser.problem_mark.line + 1,
                               parser.problem ? parser.problem : "unknown", parser.context ? " " : "",
                               parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        return rc;
    }
    pctx c = {&doc, path, job};
    top_arg t;
    memset(&t, 0, sizeof t);
    tq_status rc = TQ_OK;
    yaml_node_t* root = yaml_document_get_root_node(&doc);
    if (!root) {
        rc = tq_fail(TQ_ERR_FORMAT, "%s:1: the job file is empty (it needs at least model: and stages:)", path);
        goto out;
    }
    TQ_CHECK_GOTO(for_each_pair(&c, root, "the job file", top_keys, top_pair, &t), out);
    TQ_GOTO_FAIL(!t.have_model, TQ_ERR_FORMAT, out, "%s:%d: missing 'model:' (a Hugging Face checkpoint folder or a llama2.c .bin)", path, line_of(root));
    TQ_GOTO_FAIL(!t.stages_node, TQ_ERR_FORMAT, out, "%s:%d: missing 'stages:' (e.g. ingest, quantize, pack, publish)", path, line_of(root));
    if (!job->name[0]) {
        /* default name: the job file's base name without extension */
        const char* b = strrchr(job->job_path, '/');
        tq_fmt(job->name, sizeof job->name, "%s", b ? b + 1 : job->job_path);
        char* dot = strrchr(job->name, '.');
        if (dot) *dot = '\0';
    }
    /* ingest always runs: it prepares the run directory and the shard plan */
    if (!job->stage[TQ_STAGE_INGEST].enabled) job->stage[TQ_STAGE_INGEST].enabled = 1;
    /* prerequisites */
    {
        static const struct { tq_stage_id s, needs; } deps[] = {
            {TQ_STAGE_ALLOCATE, TQ_STAGE_CALIBRATE}, {TQ_STAGE_PACK, TQ_STAGE_QUANTIZE},
            {TQ_STAGE_VALIDATE, TQ_STAGE_PACK},      {TQ_STAGE_PUBLISH, TQ_STAGE_PACK}};
        if (job->gptq && job->stage[TQ_STAGE_QUANTIZE].enabled && !job->stage[TQ_STAGE_CALIBRATE].enabled) {
            rc = tq_fail(TQ_ERR_FORMAT, "%s:%d: stages.quantize has gptq: true, which needs the H files of stage "
                         "'calibrate': add `calibrate: {data: FILE}` to the job", path, job->stage[TQ_STAGE_QUANTIZE].line);
            goto out;
        }
        for (size_t i = 0; i < sizeof deps / sizeof deps[0]; i++)
            if (job->stage[deps[i].s].enabled && !job->stage[deps[i].needs].enabled) {
                rc = tq_fail(TQ_ERR_FORMAT, "%s:%d: stage '%s' needs stage '%s', which the job does not list", path,
                             job->stage[deps[i].s].line, tq_stage_name(deps[i].s), tq_stage_name(deps[i].needs));
                goto out;
            }
    }
    /* codecs: default, rules (group = rule's or the stage's) */
    if (job->stage[TQ_STAGE_QUANTIZE].enabled) {
        tq_codec cd;
        char why[1024];
        if (tq_codec_parse(job->codec, job->group, &cd) != TQ_OK) {
            tq_fmt(why, sizeof why, "%s", tq_last_error());
            rc = tq_fail(TQ_ERR_FORMAT, "%s:%d: stages.quantize: codec '%s' with group %d: %s", path,
                         job->stage[TQ_STAGE_QUANTIZE].line, job->codec, job->group, why);
            goto out;
        }
        for (int i = 0; i < job->n_rules; i++) {
            tq_codec_rule* r = &job->rules[i];
            int g = r->group ? r->group : job->group;
            if (tq_codec_parse(r->codec, g, &cd) != TQ_OK) {
                tq_fmt(why, sizeof why, "%s", tq_last_error());
                rc = tq_fail(TQ_ERR_FORMAT, "%s:%d: rule codec '%s' with group %d: %s", path, r->line, r->codec, g, why);
                goto out;
            }
        }
    }
    if (job->stage[TQ_STAGE_ALLOCATE].enabled && job->budget_bpw == 0 && job->budget_bytes == 0) {
        rc = tq_fail(TQ_ERR_FORMAT, "%s:%d: stages.allocate needs budget_bpw or budget_bytes", path,
                     job->stage[TQ_STAGE_ALLOCATE].line);
        goto out;
    }
    if (job->stage[TQ_STAGE_VALIDATE].enabled && !job->eval_data[0]) {
        rc = tq_fail(TQ_ERR_FORMAT, "%s:%d: stages.validate needs 'data' (a text or token file)", path,
                     job->stage[TQ_STAGE_VALIDATE].line);
        goto out;
    }
    if (job->stage[TQ_STAGE_CALIBRATE].enabled && !job->calib_data[0]) {
        rc = tq_fail(TQ_ERR_FORMAT, "%s:%d: stages.calibrate needs 'data'", path, job->stage[TQ_STAGE_CALIBRATE].line);
        goto out;
    }
    /* resources: defaults, then per stage */
    for (int s = 0; s < TQ_STAGE_COUNT; s++) {
        job->stage[s].res = t.res;
        if (t.stages.st[s].res_set) res_merge(&job->stage[s].res, &t.stages.st[s].res);
        tq_resources* r = &job->stage[s].res;
        if (r->nodes && r->ntasks && r->ntasks < r->nodes) {
            rc = tq_fail(TQ_ERR_FORMAT, "%s:%d: stage '%s': ntasks %d < nodes %d (each node needs at least one task)",
                         path, job->stage[s].line ? job->stage[s].line : 1, tq_stage_name((tq_stage_id)s), r->ntasks,
                         r->nodes);
            goto out;
        }
    }
    /* outputs */
    if (run_dir_override && *run_dir_override) resolve_output(job, run_dir_override, job->run_dir);
    else if (t.run_rel[0]) resolve_output(job, t.run_rel, job->run_dir);
    else {
        char rel[TQ_PATH_MAX];
        tq_fmt(rel, sizeof rel, "runs/%s", job->name);
        resolve_output(job, rel, job->run_dir);
    }
    if (t.out_rel[0]) resolve_output(job, t.out_rel, job->output);
    else tq_fmt(job->output, sizeof job->output, "%s/published", job->run_dir);
out:
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return rc;
}

tq_status tq_job_load(const char* path, const char* launch_dir, const char* run_dir_override, tq_job* job)
{
    char* text = NULL;
    size_t len = 0;
    tq_status rc = tq_read_file(path, &text, &len);
    if (rc != TQ_OK) return tq_fail(rc, "cannot read the job file: %s", tq_last_error());
    if (strlen(text) != len) {
        free(text);
        return tq_fail(TQ_ERR_FORMAT, "%s: the job file contains a NUL byte; it must be YAML text", path);
    }
    rc = tq_job_parse(text, path, launch_dir, run_dir_override, job);
    free(text);
    return rc;
}

void tq_job_codec_for(const tq_job* job, const char* role_name, const char* tensor, char codec[16], int* group)
{
    for (int i = 0; i < job->n_rules; i++) {
        const tq_codec_rule* r = &job->rules[i];
        int hit = 1;
        if (r->role[0] && strcmp(r->role, role_name)) hit = 0;
        if (r->match[0] && !strstr(tensor, r->match)) hit = 0;
        if (hit) {
            tq_fmt(codec, 16, "%s", r->codec);
            *group = r->group ? r->group : job->group;
            return;
        }
    }
    tq_fmt(codec, 16, "%s", job->codec);
    *group = job->group;
}

void tq_job_stage_fingerprint(const tq_job* j, tq_stage_id s, char* out, size_t cap)
{
    int n = 0;
#define FP(...)                                                                                                 \
    do {                                                                                                        \
        if (n >= 0 && (size_t)n < cap) n += snprintf(out + n, cap - (size_t)n, __VA_ARGS__);                   \
    } while (0)
    FP("v1 stage=%s model=%s seed=%llu", tq_stage_name(s), j->model, (unsigned long long)j->seed);
    switch (s) {
    case TQ_STAGE_INGEST: FP(" verify=%d arch=%d", j->ingest_verify, j->ingest_check_arch); break;
    case TQ_STAGE_CALIBRATE:
        FP(" data=%s tokens=%lld ctx=%d", j->calib_data, (long long)j->calib_tokens, j->calib_ctx);
        if (j->calib_diag_experts) FP(" expert_h=diag");
        break;
    case TQ_STAGE_ALLOCATE:
        FP(" bpw=%.6g bytes=%llu", j->budget_bpw, (unsigned long long)j->budget_bytes);
        for (int i = 0; i < j->n_allowed; i++) FP(" allow=%s", j->allowed[i]);
        break;
    case TQ_STAGE_QUANTIZE:
        FP(" codec=%s group=%d unit=%llu", j->codec, j->group, (unsigned long long)j->max_unit_bytes);
        if (j->gptq) FP(" gptq=1 act_order=%d damp=%.9g", j->gptq_act_order, j->gptq_damp);
        for (int i = 0; i < j->n_rules; i++)
            FP(" rule=%s/%s/%s/%d", j->rules[i].role, j->rules[i].match, j->rules[i].codec, j->rules[i].group);
        break;
    case TQ_STAGE_PACK: FP(" zstd=%d shard=%llu", j->zstd_level, (unsigned long long)j->shard_size); break;
    case TQ_STAGE_VALIDATE:
        FP(" data=%s ctx=%d stride=%d max=%lld", j->eval_data, j->eval_ctx, j->eval_stride, (long long)j->eval_max_tokens);
        for (int i = 0; i < j->n_kv; i++) FP(" kv=%s", j->kv_codecs[i]);
        /* where it runs moves the metrics by ~1e-4 (bf16 GEMMs): an explicit choice is an input; auto
         * (the default) adds nothing, so runs made before these keys existed keep their fingerprint */
        if (j->eval_device[0] && strcmp(j->eval_device, "auto")) FP(" device=%s", j->eval_device);
        if (j->eval_gpu_weights[0] && strcmp(j->eval_gpu_weights, "auto")) FP(" gpu_weights=%s", j->eval_gpu_weights);
        break;
    case TQ_STAGE_PUBLISH: FP(" output=%s license=%s", j->output, j->license); break;
    default: break;
    }
#undef FP
}
