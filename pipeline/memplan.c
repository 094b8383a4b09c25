/* memplan.c — memory planner arithmetic (pipeline/memplan.h): weights per role under a codec, a bpw
 * figure or a plan; KV bytes per token for full-attention layers; linear-attention recurrent state. */
#include "memplan.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fileio.h" /* defines: tq_read_file */

// ------------------------------------------------------------------------------------------------
// weights

static const struct {
    const char* name;
    double bpw;
} llama_cpp_types[] = {
    /* whole-model bpw, Llama-3.1-8B, llama.cpp tools/quantize/README.md (../shared/REFERENCE.md §2) */
    {"q8_0", 8.5008},   {"q6_k", 6.5633},   {"q5_k_m", 5.7036}, {"q4_k_m", 4.8944}, {"q4_k_s", 4.6672},
    {"iq4_xs", 4.4597}, {"q2_k", 3.1593},   {"iq3_xxs", 3.2548}, {"iq2_xxs", 2.3824}, {"iq1_m", 2.1460},
    {"iq1_s", 2.0042},
};

tq_status tq_wspec_parse(const char* s, int group, tq_wspec* out)
{
    memset(out, 0, sizeof *out);
    if (!s || !*s) return tq_fail(TQ_ERR_ARG, "--weights: empty value");
    char* end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (end != s && !*end && !errno) {
        if (!(v > 0 && v <= 64))
            return tq_fail(TQ_ERR_ARG, "--weights %s: bits per weight must be in (0, 64]", s);
        out->kind = TQ_WSPEC_BPW;
        out->bpw = v;
        snprintf(out->label, sizeof out->label, "%.6g bpw", v);
        return TQ_OK;
    }
    char low[32];
    size_t n = strlen(s);
    if (n < sizeof low) {
        for (size_t i = 0; i <= n; i++) low[i] = (char)tolower((unsigned char)s[i]);
        for (size_t i = 0; i < sizeof llama_cpp_types / sizeof llama_cpp_types[0]; i++)
            if (!strcmp(low, llama_cpp_types[i].name)) {
                out->kind = TQ_WSPEC_BPW;
                out->bpw = llama_cpp_types[i].bpw;
                snprintf(out->label, sizeof out->label, "%s (%.4f bpw)", llama_cpp_types[i].name, out->bpw);
                return TQ_OK;
            }
    }
    tq_status rc = tq_codec_parse(s, group, &out->codec);
    if (rc != TQ_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", tq_last_error());
        return tq_fail(TQ_ERR_ARG, "--weights %s: not a number of bits per weight, a llama.cpp type (q4_k_m, q8_0, ...)"
                       " or a codec (%s)", s, msg);
    }
    out->kind = TQ_WSPEC_CODEC;
    if (out->codec.kind == TQ_CODEC_FP16 || out->codec.kind == TQ_CODEC_BF16 || out->codec.kind == TQ_CODEC_F32 ||
        group == 0)
        snprintf(out->label, sizeof out->label, "%s", out->codec.name);
    else
        snprintf(out->label, sizeof out->label, "%s/g%d", out->codec.name, out->codec.group);
    return TQ_OK;
}

static double coded_bytes(const tq_codec* c, const tq_arch_tensor* t)
{
    return (double)tq_codec_bytes(c, tq_arch_tensor_rows(t), tq_arch_tensor_cols(t));
}

tq_status tq_memplan_read_plan(const tq_arch* a, const char* path, tq_codec* codecs)
{
    char* text = NULL;
    size_t len = 0;
    TQ_FORWARD(tq_read_file(path, &text, &len));
    for (int64_t i = 0; i < a->n_tensors; i++) memset(&codecs[i], 0, sizeof codecs[i]);
    tq_status rc = TQ_OK;
    int line = 0;
    char* p = text;
    while (p && *p && rc == TQ_OK) {
        line++;
        char* nl = strchr(p, '\n');
        if (nl) *nl = 0;
        char* hash = strchr(p, '#');
        if (hash) *hash = 0;
        char name[TQ_MAX_NAME + 1], codec[32], extra[16];
        int group = 0;
        name[0] = codec[0] = extra[0] = 0;
        int k = sscanf(p, "%256s %31s %d %15s", name, codec, &group, extra);
        if (k == EOF || k <= 0) {
            /* blank line */
        } else if (k == 1) {
            rc = tq_fail(TQ_ERR_FORMAT, "%s:%d: expected '<tensor name> <codec> [group]'", path, line);
        } else if (k == 4) {
            rc = tq_fail(TQ_ERR_FORMAT, "%s:%d: unexpected text after the group ('%s')", path, line, extra);
        } else {
            const tq_arch_tensor* t = tq_arch_find(a, name);
            char buf[TQ_MAX_NAME + 32];
            if (!t && !strncmp(name, "model.language_model.", 21)) {
                snprintf(buf, sizeof buf, "model.%s", name + 21);
                t = tq_arch_find(a, buf);
            } else if (!t && !strncmp(name, "model.", 6)) {
                snprintf(buf, sizeof buf, "model.language_model.%s", name + 6);
                t = tq_arch_find(a, buf);
            }
            if (!t) {
                if (!tq_arch_is_ignored_name(name))
                    rc = tq_fail(TQ_ERR_FORMAT, "%s:%d: tensor '%s' is not part of this model (%s)", path, line, name,
                                 a->model_type);
            } else {
                int64_t idx = t - a->tensors;
                tq_codec c;
                char* lab = strstr(codec, ":g"); /* allocate.h label form "rtn4:g64" */
                if (lab) {
                    char* end = NULL;
                    long g = strtol(lab + 2, &end, 10);
                    if (end && !*end && g > 0 && g < 65536 && (k < 3 || g == group)) group = (int)g;
                    else group = -1; /* rejected by tq_codec_parse */
                    *lab = 0;
                }
                if (tq_codec_parse(codec, group, &c) != TQ_OK) {
                    char msg[400];
                    snprintf(msg, sizeof msg, "%s", tq_last_error());
                    rc = tq_fail(TQ_ERR_FORMAT, "%s:%d: %s", path, line, msg);
                } else if (codecs[idx].kind != TQ_CODEC_INVALID) {
                    rc = tq_fail(TQ_ERR_FORMAT, "%s:%d: tensor '%s' is listed twice", path, line, name);
                } else {
                    codecs[idx] = c;
                }
            }
        }
        p = nl ? nl + 1 : NULL;
    }
    free(text);
    return rc;
}

tq_status tq_memplan_weights(const tq_arch* a, const tq_wspec* w, tq_dtype other, tq_wbytes* out)
{
    memset(out, 0, sizeof *out);
    const double keep = (double)tq_dtype_size(other);
    if (keep == 0) return tq_fail(TQ_ERR_ARG, "estimate: invalid dtype for uncoded tensors");
    tq_codec* plan = NULL;
    if (w->kind == TQ_WSPEC_PLAN) {
        plan = calloc((size_t)(a->n_tensors > 0 ? a->n_tensors : 1), sizeof *plan);
        if (!plan) return tq_fail(TQ_ERR_NOMEM, "estimate: out of memory");
        tq_status rc = tq_memplan_read_plan(a, w->plan, plan);
        if (rc != TQ_OK) {
            free(plan);
            return rc;
        }
    }
    for (int64_t i = 0; i < a->n_tensors; i++) {
        const tq_arch_tensor* t = &a->tensors[i];
        int64_t numel = tq_arch_tensor_numel(t);
        double b;
        out->params += numel;
        if (w->kind == TQ_WSPEC_BPW) {
            b = (double)numel * w->bpw / 8.0;
            out->n_coded++;
        } else if (w->kind == TQ_WSPEC_CODEC && tq_role_is_linear(t->role)) {
            b = coded_bytes(&w->codec, t);
            out->n_coded++;
        } else if (w->kind == TQ_WSPEC_PLAN && plan[i].kind != TQ_CODEC_INVALID) {
            b = coded_bytes(&plan[i], t);
            out->n_coded++;
        } else {
            b = (double)numel * keep;
            out->n_kept++;
            if (w->kind == TQ_WSPEC_PLAN) out->n_plan_unlisted++;
        }
        out->by_role[t->role] += b;
        out->total += b;
    }
    free(plan);
    out->bpw = out->params ? 8.0 * out->total / (double)out->params : 0;
    return TQ_OK;
}

// ------------------------------------------------------------------------------------------------
// KV cache and state

tq_status tq_kvspec_parse(const char* s, tq_kvspec* out)
{
    memset(out, 0, sizeof *out);
    if (!s || !*s) return tq_fail(TQ_ERR_ARG, "--kv: empty value");
    char* end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (end != s && !*end && !errno) {
        if (!(v > 0 && v <= 64)) return tq_fail(TQ_ERR_ARG, "--kv %s: bits per element must be in (0, 64]", s);
        out->is_bits = 1;
        out->bits = v;
        snprintf(out->label, sizeof out->label, "%.6g bits", v);
        return TQ_OK;
    }
    if (tq_kv_codec_parse(s, 0, &out->codec) != TQ_OK) {
        char msg[400];
        snprintf(msg, sizeof msg, "%s", tq_last_error());
        return tq_fail(TQ_ERR_ARG, "--kv %s: not a number of bits per element or a KV codec (%s)", s, msg);
    }
    snprintf(out->label, sizeof out->label, "%s", out->codec.name);
    return TQ_OK;
}

double tq_memplan_kv_bytes_per_token(const tq_arch* a, const tq_kvspec* k)
{
    int64_t vecs = (int64_t)a->n_full_layers * a->n_kv_heads * 2; /* K and V head vectors per token */
    if (k->is_bits) return (double)vecs * a->head_dim * k->bits / 8.0;
    return (double)vecs * (double)tq_kv_vec_bytes(&k->codec, a->head_dim);
}

double tq_memplan_kv_bits(const tq_arch* a, const tq_kvspec* k)
{
    int64_t el = tq_arch_kv_elems_per_token(a);
    return el ? 8.0 * tq_memplan_kv_bytes_per_token(a, k) / (double)el : 0.0;
}

double tq_memplan_state_bytes(const tq_arch* a, tq_dtype state_dtype)
{
    return (double)tq_arch_recurrent_state_elems(a) * (double)tq_dtype_size(state_dtype);
}
