/* estimate.c — `tqpipe estimate`: the memory planner (issue 8). For a config.json (or a checkpoint or
 * run directory holding one) prints the parameter count (total and active per token), weight bytes per
 * role under each requested codec / bits-per-weight / allocation plan, KV cache bytes (full-attention
 * layers only) and the linear-attention recurrent state, and totals across contexts; --json gives the
 * same numbers machine-readable and --plot draws memory vs context as an SVG.
 * The arithmetic lives in pipeline/memplan.c; this file parses options and formats. See --help. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "arch.h"    /* defines: tq_arch_from_json, tq_arch_param_count */
#include "commands.h"
#include "fileio.h"  /* defines: tq_read_file, tq_write_file_atomic */
#include "memplan.h" /* defines: tq_wspec, tq_kvspec, tq_memplan_* */
#include "status.h"

#define EST_MAX_LIST 32

static void est_help(FILE* f)
{
    fprintf(f,
            "usage: tqpipe estimate CONFIG_OR_CHECKPOINT [--weights W[,W...]] [--kv K[,K...]]\n"
            "                       [--context N[,N...]] [--batch B] [--plan RUN] [--group G]\n"
            "                       [--other-dtype bf16|f16|f32] [--state-dtype f32|bf16|f16]\n"
            "                       [--gib] [--json] [--plot FILE.svg]\n\n"
            "Memory a model needs: weights + batch x (context x KV bytes per token + recurrent state).\n"
            "CONFIG_OR_CHECKPOINT is a config.json, or a directory holding one (HF checkpoint).\n\n"
            "  --weights W   codec (tq1..tq4, tq4r4, bin1, ter, rtn2..rtn8, int8, fp16, bf16, f32: exact bytes\n"
            "                of every part, applied to linear layers; norms etc. keep --other-dtype), a number\n"
            "                of bits per weight applied to every parameter (e.g. 4.8944), or a llama.cpp type\n"
            "                (q4_k_m = 4.8944, q8_0 = 8.5008, ... whole-model bpw measured on Llama-3.1-8B).\n"
            "                Repeat or comma-separate. Default: bf16,int8,q4_k_m,tq4,tq3,tq2,bin1\n"
            "  --kv K        KV cache codec (f32, fp16, bf16, int8, tq4, tq3.5, tq3, tq2.5, tq2, ...+qjl: exact\n"
            "                bytes per head vector, norms included) or bits per element (e.g. 3.5: codes\n"
            "                only). Default: fp16,int8,tq4,tq3.5,tq3,tq2.5,tq2\n"
            "  --context N   tokens per sequence (K suffix = 1024). Default: 4096,32768,131072 and the\n"
            "                model's max_position_embeddings\n"
            "  --batch B     sequences (default 1); KV and recurrent state scale with it\n"
            "  --plan RUN    allocation plan: RUN/plan.txt (or a file): lines '<tensor> <codec> [group]';\n"
            "                tensors it does not list keep --other-dtype (format: tqpipe allocate's plan.txt)\n"
            "  --group G     codec group size 64, 128 (default) or 256\n"
            "  --other-dtype dtype of tensors a codec does not cover (default bf16)\n"
            "  --state-dtype dtype of the linear-attention recurrent state (default f32, as llama.cpp)\n"
            "  --gib         print GiB (2^30) instead of GB (1e9)\n"
            "  --json        print JSON instead of tables\n"
            "  --plot FILE   write an SVG of total memory vs context for the weights x kv pairs\n\n"
            "example (the seed simulation, corrected):\n"
            "  tqpipe estimate jobs/configs/qwen3.5-122b-a10b.json --weights 4.8944,1.125 --kv fp16,3.5 "
            "--context 262144\n");
}

typedef struct {
    const char* input;
    const char* wlist[EST_MAX_LIST];
    int nw;
    const char* klist[EST_MAX_LIST];
    int nk;
    int64_t ctx[EST_MAX_LIST];
    int nctx;
    int ctx_given;
    int64_t batch;
    const char* plan;
    int group;
    tq_dtype other, state;
    int json, gib;
    const char* plot;
} est_opts;

static int split_list(char* s, const char** out, int* n)
{
    for (char* tok = strtok(s, ","); tok; tok = strtok(NULL, ",")) {
        if (*n >= EST_MAX_LIST) return -1;
        out[(*n)++] = tok;
    }
    return 0;
}

static int parse_ctx(const char* s, int64_t* out)
{
    char* end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno) return -1;
    if (*end == 'k' || *end == 'K') v *= 1024, end++;
    else if (*end == 'm' || *end == 'M') v *= 1048576, end++;
    if (*end || v < 1 || v > 1e12) return -1;
    *out = (int64_t)v;
    return 0;
}

static int parse_dtype(const char* s, tq_dtype* out)
{
    if (!strcmp(s, "bf16")) *out = TQ_BF16;
    else if (!strcmp(s, "f16") || !strcmp(s, "fp16")) *out = TQ_F16;
    else if (!strcmp(s, "f32") || !strcmp(s, "fp32")) *out = TQ_F32;
    else return -1;
    return 0;
}

static int cmp_i64(const void* a, const void* b)
{
    int64_t x = *(const int64_t*)a, y = *(const int64_t*)b;
    return x < y ? -1 : x > y;
}

/* Role groups for the weights table. */
enum { G_EMBED, G_ATTN, G_LIN, G_MLP, G_EXPERTS, G_SHARED, G_OTHER, G_COUNT };
static const char* const group_names[G_COUNT] = {"embed+head", "attention", "linear-attn", "mlp", "experts",
                                                 "shared+router", "norms+other"};

static int role_group(tq_role r)
{
    switch (r) {
    case TQ_ROLE_EMBED: case TQ_ROLE_LM_HEAD: return G_EMBED;
    case TQ_ROLE_ATTN_Q: case TQ_ROLE_ATTN_K: case TQ_ROLE_ATTN_V: case TQ_ROLE_ATTN_O: case TQ_ROLE_ATTN_BIAS:
        return G_ATTN;
    case TQ_ROLE_LIN_QKV: case TQ_ROLE_LIN_Z: case TQ_ROLE_LIN_BA: case TQ_ROLE_LIN_OUT: return G_LIN;
    case TQ_ROLE_MLP_GATE: case TQ_ROLE_MLP_UP: case TQ_ROLE_MLP_DOWN: return G_MLP;
    case TQ_ROLE_EXPERT_GATE: case TQ_ROLE_EXPERT_UP: case TQ_ROLE_EXPERT_DOWN: case TQ_ROLE_EXPERT_GATE_UP:
        return G_EXPERTS;
    case TQ_ROLE_SHARED_GATE: case TQ_ROLE_SHARED_UP: case TQ_ROLE_SHARED_DOWN: case TQ_ROLE_SHARED_EXPERT_GATE:
    case TQ_ROLE_ROUTER:
        return G_SHARED;
    default: return G_OTHER;
    }
}

typedef struct {
    tq_wspec spec;
    tq_wbytes b;
} wrow;

typedef struct {
    tq_kvspec spec;
    double per_token;
    double bits;
} krow;

static tq_status load_arch(const char* input, tq_arch** a)
{
    struct stat st;
    char path[4096];
    if (stat(input, &st) != 0) return tq_errno_status(errno, "estimate: cannot open", input);
    if (S_ISDIR(st.st_mode)) snprintf(path, sizeof path, "%s/config.json", input);
    else snprintf(path, sizeof path, "%s", input);
    char* text = NULL;
    size_t len = 0;
    tq_status rc = tq_read_file(path, &text, &len);
    if (rc != TQ_OK) return rc;
    rc = tq_arch_from_json(text, a);
    free(text);
    if (rc != TQ_OK) {
        char msg[2048];
        snprintf(msg, sizeof msg, "%s", tq_last_error());
        return tq_fail(rc, "%s: %s", path, msg);
    }
    return TQ_OK;
}

static void fmt_int(char* dst, size_t cap, int64_t v) /* 122,111,526,912 */
{
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%" PRId64, v);
    size_t n = strlen(tmp), o = 0;
    for (size_t i = 0; i < n && o + 2 < cap; i++) {
        dst[o++] = tmp[i];
        size_t left = n - 1 - i;
        if (left && left % 3 == 0 && tmp[i] != '-') dst[o++] = ',';
    }
    dst[o] = 0;
}

// ------------------------------------------------------------------------------------------------
// SVG

static const char* const colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
                                     "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

static tq_status write_svg(const char* path, const tq_arch* a, const char* model_label, const wrow* w, int nw,
                           const krow* k, int nk, double state, int64_t batch, int64_t cmax, double unit,
                           const char* uname)
{
    /* pairs: every weights x kv combination, at most 16 lines */
    int pw[16], pk[16], np = 0;
    for (int i = 0; i < nw && np < 16; i++)
        for (int j = 0; j < nk && np < 16; j++) pw[np] = i, pk[np] = j, np++;
    const double W = 860, H = 520, L = 80, R = 250, T = 50, B = 60;
    const double pw_ = W - L - R, ph = H - T - B;
    double xmin = log2(1024.0), xmax = log2((double)(cmax > 2048 ? cmax : 2048));
    double ymax = 0;
    for (int p = 0; p < np; p++) {
        double v = (w[pw[p]].b.total + (double)batch * ((double)cmax * k[pk[p]].per_token + state)) / unit;
        if (v > ymax) ymax = v;
    }
    /* nice y axis */
    double step = pow(10.0, floor(log10(ymax > 0 ? ymax : 1)));
    if (ymax / step < 2) step /= 5;
    else if (ymax / step < 5) step /= 2;
    double ytop = ceil(ymax / step) * step;
    if (ytop <= 0) ytop = 1;

    size_t cap = 1 << 16, n = 0;
    char* s = malloc(cap);
    if (!s) return tq_fail(TQ_ERR_NOMEM, "estimate: out of memory");
#define OUT(...)                                                                                     \
    do {                                                                                             \
        int k_ = snprintf(s + n, cap - n, __VA_ARGS__);                                              \
        if (k_ > 0 && (size_t)k_ >= cap - n) {                                                       \
            char* ns_ = realloc(s, cap * 2 + (size_t)k_);                                            \
            if (!ns_) {                                                                              \
                free(s);                                                                             \
                return tq_fail(TQ_ERR_NOMEM, "estimate: out of memory");                             \
            }                                                                                        \
            s = ns_;                                                                                 \
            cap = cap * 2 + (size_t)k_;                                                              \
            k_ = snprintf(s + n, cap - n, __VA_ARGS__);                                              \
        }                                                                                            \
        if (k_ > 0) n += (size_t)k_;                                                                 \
    } while (0)
    OUT("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" font-family=\"sans-serif\" "
        "font-size=\"12\">\n", W, H);
    OUT("<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    OUT("<text x=\"%.0f\" y=\"24\" font-size=\"15\">%s: memory vs context (batch %" PRId64 ")</text>\n", L,
        model_label, batch);
    /* grid + axes */
    for (double y = 0; y <= ytop + 1e-9; y += step) {
        double py = T + ph - y / ytop * ph;
        OUT("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", L, py, L + pw_, py);
        OUT("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", L - 6, py + 4, y);
    }
    for (double x = xmin; x <= xmax + 1e-9; x += 1) {
        double px = L + (x - xmin) / (xmax - xmin) * pw_;
        OUT("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>\n", px, T, px, T + ph);
        double c = pow(2.0, x);
        if (((int)(x - xmin)) % 2 == 0 || x + 1 > xmax) {
            if (c >= 1048576) OUT("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%gM</text>\n", px, T + ph + 18, c / 1048576);
            else OUT("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%gK</text>\n", px, T + ph + 18, c / 1024);
        }
    }
    OUT("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"black\"/>\n", L, T, pw_, ph);
    OUT("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">context (tokens, log scale)</text>\n", L + pw_ / 2, H - 20);
    OUT("<text x=\"20\" y=\"%.1f\" transform=\"rotate(-90 20 %.1f)\" text-anchor=\"middle\">total memory (%s)</text>\n",
        T + ph / 2, T + ph / 2, uname);
    for (int p = 0; p < np; p++) {
        const char* col = colors[p % 10];
        OUT("<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"", col,
            p >= 10 ? " stroke-dasharray=\"6,3\"" : "");
        for (int i = 0; i <= 64; i++) {
            double x = xmin + (xmax - xmin) * i / 64.0;
            double c = pow(2.0, x);
            double v = (w[pw[p]].b.total + (double)batch * (c * k[pk[p]].per_token + state)) / unit;
            OUT("%.1f,%.1f ", L + (x - xmin) / (xmax - xmin) * pw_, T + ph - v / ytop * ph);
        }
        OUT("\"/>\n");
        double ly = T + 10 + 18 * p;
        OUT("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"/>\n", W - R + 15,
            ly, W - R + 40, ly, col);
        OUT("<text x=\"%.1f\" y=\"%.1f\">%s + KV %s</text>\n", W - R + 46, ly + 4, w[pw[p]].spec.label,
            k[pk[p]].spec.label);
    }
    OUT("<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" fill=\"#555\">%d of %d layers hold KV; state %.3g %s/seq</text>\n",
        W - R + 15, T + 18 * np + 20, a->n_full_layers, a->n_layers, state / unit, uname);
    OUT("</svg>\n");
#undef OUT
    tq_status rc = tq_write_file_atomic(path, s, n);
    free(s);
    return rc;
}

// ------------------------------------------------------------------------------------------------
// main

static tq_status run_estimate(est_opts* o)
{
    tq_arch* a = NULL;
    tq_status rc = load_arch(o->input, &a);
    if (rc != TQ_OK) return rc;
    wrow* w = calloc(EST_MAX_LIST + 1, sizeof *w);
    krow* k = calloc(EST_MAX_LIST, sizeof *k);
    char plan_path[4096];
    json_t* root = NULL;
    int nw = 0, nk = 0;
    if (!w || !k) {
        rc = tq_fail(TQ_ERR_NOMEM, "estimate: out of memory");
        goto out;
    }
    for (int i = 0; i < o->nw; i++) {
        TQ_CHECK_GOTO(tq_wspec_parse(o->wlist[i], o->group, &w[nw].spec), out);
        TQ_CHECK_GOTO(tq_memplan_weights(a, &w[nw].spec, o->other, &w[nw].b), out);
        nw++;
    }
    if (o->plan) {
        struct stat st;
        if (stat(o->plan, &st) == 0 && S_ISDIR(st.st_mode)) snprintf(plan_path, sizeof plan_path, "%s/plan.txt", o->plan);
        else snprintf(plan_path, sizeof plan_path, "%s", o->plan);
        w[nw].spec.kind = TQ_WSPEC_PLAN;
        w[nw].spec.plan = plan_path;
        snprintf(w[nw].spec.label, sizeof w[nw].spec.label, "plan");
        TQ_CHECK_GOTO(tq_memplan_weights(a, &w[nw].spec, o->other, &w[nw].b), out);
        nw++;
    }
    for (int i = 0; i < o->nk; i++) {
        TQ_CHECK_GOTO(tq_kvspec_parse(o->klist[i], &k[nk].spec), out);
        if (!k[nk].spec.is_bits && k[nk].spec.codec.kind == TQ_KV_TQ && (a->head_dim & (a->head_dim - 1))) {
            rc = tq_fail(TQ_ERR_ARG, "--kv %s: tq KV codecs need a power-of-two head_dim (this model has %d)",
                         o->klist[i], a->head_dim);
            goto out;
        }
        k[nk].per_token = tq_memplan_kv_bytes_per_token(a, &k[nk].spec);
        k[nk].bits = tq_memplan_kv_bits(a, &k[nk].spec);
        nk++;
    }
    if (!o->ctx_given) {
        int64_t maxp = a->max_position > 0 ? a->max_position : 262144;
        int64_t d[] = {4096, 32768, 131072, maxp};
        o->nctx = 0;
        for (int i = 0; i < 4; i++)
            if (d[i] <= maxp || i == 3) o->ctx[o->nctx++] = d[i];
    }
    qsort(o->ctx, (size_t)o->nctx, sizeof o->ctx[0], cmp_i64);
    {
        int m = 0;
        for (int i = 0; i < o->nctx; i++)
            if (!m || o->ctx[i] != o->ctx[m - 1]) o->ctx[m++] = o->ctx[i];
        o->nctx = m;
    }
    const double unit = o->gib ? 1073741824.0 : 1e9;
    const char* uname = o->gib ? "GiB" : "GB";
    const double state = tq_memplan_state_bytes(a, o->state);
    const int64_t P = tq_arch_param_count(a), PA = tq_arch_active_param_count(a);
    char desc[512];
    tq_arch_describe(a, desc, sizeof desc);

    if (o->json) {
        root = json_object();
        json_t* m = json_object();
        json_object_set_new(m, "model_type", json_string(a->model_type));
        json_object_set_new(m, "description", json_string(desc));
        json_object_set_new(m, "layers", json_integer(a->n_layers));
        json_object_set_new(m, "full_attention_layers", json_integer(a->n_full_layers));
        json_object_set_new(m, "linear_attention_layers", json_integer(a->n_linear_layers));
        json_object_set_new(m, "params_total", json_integer(P));
        json_object_set_new(m, "params_active", json_integer(PA));
        json_object_set_new(m, "tensors", json_integer(a->n_tensors));
        json_object_set_new(m, "kv_elements_per_token", json_integer(tq_arch_kv_elems_per_token(a)));
        json_object_set_new(m, "state_elements_per_sequence", json_integer(tq_arch_recurrent_state_elems(a)));
        json_object_set_new(m, "state_bytes_per_sequence", json_real(state));
        json_object_set_new(m, "state_dtype", json_string(tq_dtype_name(o->state)));
        json_object_set_new(root, "model", m);
        json_object_set_new(root, "batch", json_integer(o->batch));
        json_t* ja = json_array();
        for (int i = 0; i < nw; i++) {
            json_t* e = json_object();
            json_object_set_new(e, "weights", json_string(w[i].spec.label));
            json_object_set_new(e, "bytes", json_real(w[i].b.total));
            json_object_set_new(e, "bpw", json_real(w[i].b.bpw));
            json_object_set_new(e, "tensors_coded", json_integer(w[i].b.n_coded));
            json_object_set_new(e, "tensors_kept", json_integer(w[i].b.n_kept));
            json_t* br = json_object();
            for (int r = 0; r < TQ_ROLE_COUNT; r++)
                if (w[i].b.by_role[r] > 0) json_object_set_new(br, tq_role_name((tq_role)r), json_real(w[i].b.by_role[r]));
            json_object_set_new(e, "bytes_by_role", br);
            json_array_append_new(ja, e);
        }
        json_object_set_new(root, "weights", ja);
        json_t* jk = json_array();
        for (int j = 0; j < nk; j++) {
            json_t* e = json_object();
            json_object_set_new(e, "kv", json_string(k[j].spec.label));
            json_object_set_new(e, "bits_per_element", json_real(k[j].bits));
            json_object_set_new(e, "bytes_per_token", json_real(k[j].per_token));
            json_t* bc = json_object();
            for (int c = 0; c < o->nctx; c++) {
                char key[32];
                snprintf(key, sizeof key, "%" PRId64, o->ctx[c]);
                json_object_set_new(bc, key, json_real((double)o->batch * (double)o->ctx[c] * k[j].per_token));
            }
            json_object_set_new(e, "bytes_by_context", bc);
            json_array_append_new(jk, e);
        }
        json_object_set_new(root, "kv", jk);
        json_t* jt = json_array();
        for (int c = 0; c < o->nctx; c++)
            for (int i = 0; i < nw; i++)
                for (int j = 0; j < nk; j++) {
                    json_t* e = json_object();
                    double kvb = (double)o->batch * (double)o->ctx[c] * k[j].per_token;
                    json_object_set_new(e, "weights", json_string(w[i].spec.label));
                    json_object_set_new(e, "kv", json_string(k[j].spec.label));
                    json_object_set_new(e, "context", json_integer(o->ctx[c]));
                    json_object_set_new(e, "weights_bytes", json_real(w[i].b.total));
                    json_object_set_new(e, "kv_bytes", json_real(kvb));
                    json_object_set_new(e, "state_bytes", json_real((double)o->batch * state));
                    json_object_set_new(e, "total_bytes", json_real(w[i].b.total + kvb + (double)o->batch * state));
                    json_array_append_new(jt, e);
                }
        json_object_set_new(root, "totals", jt);
        char* txt = json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(12));
        if (txt) {
            printf("%s\n", txt);
            free(txt);
        }
    } else {
        char pt[40], pa[40];
        fmt_int(pt, sizeof pt, P);
        fmt_int(pa, sizeof pa, PA);
        printf("model      %s\n", desc);
        printf("parameters %s total", pt);
        if (a->n_experts > 0) printf(", %s active per token (top-%d of %d experts)", pa, a->top_k, a->n_experts);
        printf("; %" PRId64 " tensors\n", a->n_tensors);
        printf("KV cache   %d of %d layers hold KV: %" PRId64 " elements per token (%.1f KiB at fp16)\n",
               a->n_full_layers, a->n_layers, tq_arch_kv_elems_per_token(a),
               (double)tq_arch_kv_elems_per_token(a) * 2 / 1024.0);
        if (a->n_linear_layers > 0)
            printf("state      %d linear-attention layers: %" PRId64 " elements per sequence = %.2f MB at %s\n",
                   a->n_linear_layers, tq_arch_recurrent_state_elems(a), state / 1e6, tq_dtype_name(o->state));
        printf("\nweights (%s; uncoded tensors in %s)\n", uname, tq_dtype_name(o->other));
        printf("%-22s %10s %8s", "weights", "total", "bpw");
        for (int g = 0; g < G_COUNT; g++) printf(" %13s", group_names[g]);
        printf("\n");
        for (int i = 0; i < nw; i++) {
            double gsum[G_COUNT] = {0};
            for (int r = 0; r < TQ_ROLE_COUNT; r++) gsum[role_group((tq_role)r)] += w[i].b.by_role[r];
            printf("%-22s %10.2f %8.4f", w[i].spec.label, w[i].b.total / unit, w[i].b.bpw);
            for (int g = 0; g < G_COUNT; g++) printf(" %13.3f", gsum[g] / unit);
            printf("\n");
            if (w[i].spec.kind == TQ_WSPEC_PLAN && w[i].b.n_plan_unlisted)
                printf("%-22s (%" PRId64 " tensors not in the plan kept in %s)\n", "", w[i].b.n_plan_unlisted,
                       tq_dtype_name(o->other));
        }
        printf("\nKV cache (%s), batch %" PRId64 "\n", uname, o->batch);
        printf("%-12s %9s %12s", "kv", "bits/elem", "bytes/token");
        for (int c = 0; c < o->nctx; c++) printf(" %11" PRId64, o->ctx[c]);
        printf("\n");
        for (int j = 0; j < nk; j++) {
            printf("%-12s %9.4f %12.1f", k[j].spec.label, k[j].bits, k[j].per_token);
            for (int c = 0; c < o->nctx; c++)
                printf(" %11.3f", (double)o->batch * (double)o->ctx[c] * k[j].per_token / unit);
            printf("\n");
        }
        int c0 = o->ctx_given ? 0 : o->nctx - 1;
        for (int c = c0; c < o->nctx; c++) {
            printf("\ntotal = weights + KV + state (%s) at context %" PRId64 ", batch %" PRId64 "\n", uname, o->ctx[c],
                   o->batch);
            printf("%-22s", "weights \\ kv");
            for (int j = 0; j < nk; j++) printf(" %10s", k[j].spec.label);
            printf("\n");
            for (int i = 0; i < nw; i++) {
                printf("%-22s", w[i].spec.label);
                for (int j = 0; j < nk; j++)
                    printf(" %10.2f", (w[i].b.total + (double)o->batch * ((double)o->ctx[c] * k[j].per_token + state)) / unit);
                printf("\n");
            }
        }
    }
    if (o->plot) {
        int64_t cmax = o->ctx[o->nctx - 1];
        TQ_CHECK_GOTO(write_svg(o->plot, a, a->model_type, w, nw, k, nk, state, o->batch, cmax, unit, uname), out);
        if (!o->json) printf("\nplot written to %s\n", o->plot);
    }
out:
    json_decref(root);
    free(w);
    free(k);
    tq_arch_free(&a);
    return rc;
}

int tq_cmd_estimate(int argc, char** argv)
{
    est_opts o;
    memset(&o, 0, sizeof o);
    o.batch = 1;
    o.group = 0;
    o.other = TQ_BF16;
    o.state = TQ_F32;
    for (int i = 1; i < argc; i++) {
        const char* a = argv[i];
        char* v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            est_help(stdout);
            return 0;
        } else if (!strcmp(a, "--weights") && v) {
            if (split_list(v, o.wlist, &o.nw)) goto too_many;
            i++;
        } else if (!strcmp(a, "--kv") && v) {
            if (split_list(v, o.klist, &o.nk)) goto too_many;
            i++;
        } else if (!strcmp(a, "--context") && v) {
            const char* items[EST_MAX_LIST];
            int n = 0;
            if (split_list(v, items, &n)) goto too_many;
            for (int j = 0; j < n; j++) {
                if (o.nctx >= EST_MAX_LIST) goto too_many;
                if (parse_ctx(items[j], &o.ctx[o.nctx])) {
                    fprintf(stderr, "tqpipe estimate: --context expects token counts like 262144 or 256K (got '%s')\n",
                            items[j]);
                    return 2;
                }
                o.nctx++;
            }
            o.ctx_given = 1;
            i++;
        } else if (!strcmp(a, "--batch") && v) {
            char* end;
            o.batch = strtoll(v, &end, 10);
            if (*end || o.batch < 1 || o.batch > 1000000) {
                fprintf(stderr, "tqpipe estimate: --batch must be an integer >= 1 (got '%s')\n", v);
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--group") && v) {
            o.group = atoi(v);
            if (o.group != 64 && o.group != 128 && o.group != 256) {
                fprintf(stderr, "tqpipe estimate: --group must be 64, 128 or 256 (got '%s')\n", v);
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--plan") && v) {
            o.plan = v;
            i++;
        } else if (!strcmp(a, "--plot") && v) {
            o.plot = v;
            i++;
        } else if (!strcmp(a, "--other-dtype") && v) {
            if (parse_dtype(v, &o.other)) {
                fprintf(stderr, "tqpipe estimate: --other-dtype must be bf16, f16 or f32\n");
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--state-dtype") && v) {
            if (parse_dtype(v, &o.state)) {
                fprintf(stderr, "tqpipe estimate: --state-dtype must be f32, bf16 or f16\n");
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--json")) {
            o.json = 1;
        } else if (!strcmp(a, "--gib")) {
            o.gib = 1;
        } else if (a[0] == '-') {
            fprintf(stderr, "tqpipe estimate: unknown option or missing value: %s\n\n", a);
            est_help(stderr);
            return 2;
        } else if (!o.input) {
            o.input = a;
        } else {
            fprintf(stderr, "tqpipe estimate: more than one input given ('%s', '%s')\n", o.input, a);
            return 2;
        }
    }
    if (!o.input) {
        fprintf(stderr, "tqpipe estimate: CONFIG_OR_CHECKPOINT is required\n\n");
        est_help(stderr);
        return 2;
    }
    static char dw[] = "bf16,int8,q4_k_m,tq4,tq3,tq2,bin1", dk[] = "fp16,int8,tq4,tq3.5,tq3,tq2.5,tq2";
    if (o.nw == 0 && !o.plan) split_list(dw, o.wlist, &o.nw);
    if (o.nk == 0) split_list(dk, o.klist, &o.nk);
    tq_status rc = run_estimate(&o);
    if (rc != TQ_OK) {
        fprintf(stderr, "tqpipe estimate: %s\n", tq_last_error());
        return 1;
    }
    return 0;
too_many:
    fprintf(stderr, "tqpipe estimate: at most %d values per list option\n", EST_MAX_LIST);
    return 2;
}
