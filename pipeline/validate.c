/* validate.c — perplexity / KL / top-1 evaluation over windows of a token stream, sequence-parallel or
 * pipeline-parallel over MPI ranks, on the CPU (pipeline/model.h) or the GPU (pipeline/model_gpu.h; NCCL
 * or host-staged MPI between ranks' GPUs) (see validate.h for the protocol). */
#include "validate.h"

#include <ctype.h>
#include <jansson.h> // defines: json_pack, json_dumps
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch.h"       // defines: tq_arch_from_json, tq_arch_param_count
#include "comm_infer.h" // defines: tq_comm_send_f32, tq_comm_recv_f32
#include "fileio.h"     // defines: tq_read_file
#include "log.h"
#include "model.h"
#include "model_gpu.h" // defines: tq_gmodel_load, tq_gmodel_layers, tq_gkv (GPU path)
#include "tokenizer.h"

void tq_eval_opts_init(tq_eval_opts* o)
{
    memset(o, 0, sizeof *o);
    o->seed = 42;
}

// ------------------------------------------------------------------------------------------------
// tokens

static int ends_with(const char* s, const char* suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

tq_status tq_load_tokens(const char* path, const char* tokenizer, int vocab, int64_t max_tokens, int** out, int64_t* n)
{
    *out = NULL;
    *n = 0;
    char* buf = NULL;
    size_t len = 0;
    TQ_FORWARD(tq_read_file(path, &buf, &len));
    int* toks = NULL;
    int64_t nt = 0;
    tq_status rc = TQ_OK;
    if (ends_with(path, ".tok")) {
        TQ_GOTO_FAIL(len % 4, TQ_ERR_FORMAT, out, "token file %s: %zu bytes is not a whole number of int32 ids", path, len);
        nt = (int64_t)(len / 4);
        toks = malloc((size_t)(nt > 0 ? nt : 1) * sizeof(int));
        TQ_GOTO_FAIL(!toks, TQ_ERR_NOMEM, out, "out of memory reading %s", path);
        for (int64_t i = 0; i < nt; i++) {
            const unsigned char* p = (const unsigned char*)buf + 4 * i;
            toks[i] = (int)((uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24));
        }
    } else {
        TQ_GOTO_FAIL(!tokenizer, TQ_ERR_ARG, out,
                     "text data %s needs a llama2.c tokenizer (--tokenizer FILE); for Hugging Face models make a .tok "
                     "file with python/make_tokens.py", path);
        tq_tokenizer* tk = NULL;
        TQ_CHECK_GOTO(tq_tokenizer_load(tokenizer, vocab > 0 ? vocab : 0, &tk), out);
        toks = malloc((len + 16) * sizeof(int));
        int* tmp = malloc((len + 16) * sizeof(int));
        if (!toks || !tmp) {
            free(tmp);
            tq_tokenizer_free(&tk);
            TQ_GOTO_FAIL(1, TQ_ERR_NOMEM, out, "out of memory tokenizing %s", path);
        }
        /* stories separated by lines "<|endoftext|>" */
        char* p = buf;
        char* story = buf;
        for (;;) {
            char* eol = strchr(p, '\n');
            char* line_end = eol ? eol : p + strlen(p);
            size_t ll = (size_t)(line_end - p);
            while (ll > 0 && (p[ll - 1] == '\r' || p[ll - 1] == ' ')) ll--;
            int sep = ll == 13 && !strncmp(p, "<|endoftext|>", 13);
            if (sep || !eol) {
                char* s_end = sep ? p : line_end;
                char saved = *s_end;
                *s_end = 0;
                char* s = story;
                while (*s && isspace((unsigned char)*s)) s++;
                size_t sl = strlen(s);
                while (sl > 0 && isspace((unsigned char)s[sl - 1])) s[--sl] = 0;
                if (sl > 0) {
                    int k = 0;
                    rc = tq_tokenizer_encode(tk, s, 1, 0, tmp, &k);
                    if (rc != TQ_OK) break;
                    memcpy(toks + nt, tmp, (size_t)k * sizeof(int));
                    nt += k;
                }
                *s_end = saved;
                story = eol ? eol + 1 : line_end;
            }
            if (!eol) break;
            p = eol + 1;
        }
        free(tmp);
        tq_tokenizer_free(&tk);
        if (rc != TQ_OK) goto out;
    }
    if (max_tokens > 0 && nt > max_tokens) nt = max_tokens;
    for (int64_t i = 0; vocab > 0 && i < nt; i++)
        TQ_GOTO_FAIL(toks[i] < 0 || toks[i] >= vocab, TQ_ERR_FORMAT, out,
                     "token file %s: id %d at index %lld is outside the model's vocabulary (%d): wrong tokenizer?", path,
                     toks[i], (long long)i, vocab);
    TQ_GOTO_FAIL(nt < 2, TQ_ERR_FORMAT, out, "token file %s: fewer than 2 tokens", path);
    *out = toks;
    *n = nt;
    toks = NULL;
out:
    free(toks);
    free(buf);
    return rc;
}

// ------------------------------------------------------------------------------------------------
// metrics of one window

enum { V_NLL = 0, V_CNT, V_REFNLL, V_KL, V_TOP1, V_N };

/* logits rows [T x V]; score positions t in [s0, T-1): next token tokens[t+1]. */
static void window_metrics(const float* lg, const float* ref, const int* tokens, int T, int s0, int V, double* out)
{
    for (int t = s0; t < T - 1; t++) {
        const float* a = lg + (size_t)t * V;
        int target = tokens[t + 1];
        double ma = a[0];
        int am = 0;
        for (int i = 1; i < V; i++)
            if (a[i] > ma) {
                ma = a[i];
                am = i;
            }
        double sa = 0;
        for (int i = 0; i < V; i++) sa += exp((double)a[i] - ma);
        double lsa = ma + log(sa);
        out[V_NLL] += lsa - a[target];
        out[V_CNT] += 1;
        if (ref) {
            const float* b = ref + (size_t)t * V;
            double mb = b[0];
            int bm = 0;
            for (int i = 1; i < V; i++)
                if (b[i] > mb) {
                    mb = b[i];
                    bm = i;
                }
            double sb = 0;
            for (int i = 0; i < V; i++) sb += exp((double)b[i] - mb);
            double lsb = mb + log(sb);
            out[V_REFNLL] += lsb - b[target];
            double kl = 0;
            for (int i = 0; i < V; i++) {
                double lpb = b[i] - lsb;
                kl += exp(lpb) * (lpb - (a[i] - lsa));
            }
            out[V_KL] += kl;
            out[V_TOP1] += am == bm;
        }
    }
}

// ------------------------------------------------------------------------------------------------
// the evaluation

/* One model on the CPU or the GPU, with its KV cache. */
typedef struct {
    tq_model* cm;
    tq_gmodel* gm;
    tq_kv_cache* ckv;
    tq_gkv* gkv;
    int alias;        /* the model belongs to another engine (reference = model with its own KV cache) */
} engine;

typedef struct {
    engine* m;        /* the model under test */
    engine* r;        /* the reference (may share m's model, with its own fp16 KV cache) */
    engine em, er;
    tq_comm_gpu* nc;  /* GPU layers mode: NCCL or host staging */
} eval_models;

/* packed_dir: the artifact src reads unmodified (its packed tensors may stay packed on the GPU), or NULL;
 * label (may be NULL) receives how the GPU holds the weights (tq_gmodel_opts_weights). */
static tq_status engine_load(engine* e, int gpu, tq_wsource* src, const char* packed_dir, int l0, int l1,
                             const tq_eval_opts* o, int device, char* label, size_t label_cap)
{
    if (!gpu) return tq_model_load(src, l0, l1, &e->cm);
    tq_gmodel_opts go;
    tq_gmodel_opts_init(&go);
    tq_gpu_weights gw;
    TQ_FORWARD(tq_gpu_weights_parse(o->gpu_weights, &gw));
    const char* what = tq_gmodel_opts_weights(&go, gw, o->gpu_bf16, packed_dir);
    if (label) snprintf(label, label_cap, "%s", what);
    go.device = device;
    return tq_gmodel_load(src, l0, l1, &go, &e->gm);
}

static tq_status engine_kv(engine* e, const tq_kv_codec* kc, const tq_kv_codec* vc, int ctx, uint64_t seed)
{
    if (e->gm) return tq_gmodel_kv_create(e->gm, kc, vc, ctx, seed, &e->gkv);
    return tq_model_kv_create(e->cm, kc, vc, ctx, seed, &e->ckv);
}

static int engine_vocab(const engine* e)
{
    return e->gm ? tq_gmodel_vocab(e->gm) : tq_model_vocab(e->cm);
}

static int engine_hidden(const engine* e)
{
    return e->gm ? tq_gmodel_hidden(e->gm) : tq_model_hidden(e->cm);
}

static void engine_free(engine* e)
{
    tq_kv_free(&e->ckv);
    tq_gkv_free(&e->gkv);
    if (e->alias) return;
    tq_model_free(&e->cm);
    tq_gmodel_free(&e->gm);
}

static tq_status open_source(const char* dir, int artifact, const tq_eval_opts* o, int quantize, tq_wsource** out)
{
    tq_wsource* w = NULL;
    TQ_FORWARD(artifact ? tq_wsource_artifact(dir, &w) : tq_wsource_ckpt(dir, &w));
    if (quantize && o->weights && o->weights[0]) {
        tq_codec c;
        tq_status rc = tq_codec_parse(o->weights, o->weights_group, &c);
        tq_wsource* q = NULL;
        if (rc == TQ_OK) rc = tq_wsource_quantized(w, &c, o->seed, o->quant_embed, &q);
        if (rc != TQ_OK) {
            tq_wsource_free(&w);
            return rc;
        }
        w = q;
    }
    *out = w;
    return TQ_OK;
}

/* The GPU version of run_window: activations stay on the device; between ranks NCCL or host + MPI. */
static tq_status run_window_gpu(const tq_rt* rt, int layers_mode, engine* e, tq_comm_gpu* nc, const int* tok, int T,
                                float* x, float* logits, int tag)
{
    tq_gmodel* m = e->gm;
    tq_gkv_reset(e->gkv);
    int rank = layers_mode ? rt->rank : 0, size = layers_mode ? rt->size : 1;
    size_t n = (size_t)T * tq_gmodel_hidden(m);
    int nccl = tq_comm_gpu_nccl(nc);
    if (rank == 0) {
        TQ_FORWARD(tq_gmodel_embed(m, tok, T));
    } else if (nccl) {
        TQ_FORWARD(tq_gmodel_reserve(m, T));
        TQ_FORWARD(tq_comm_gpu_recv(nc, rank - 1, tq_gmodel_x_dev(m), n, tq_gmodel_stream(m)));
    } else {
        TQ_FORWARD(tq_comm_recv_f32(rt, rank - 1, tag, x, n));
        TQ_FORWARD(tq_gmodel_x_set(m, x, T));
    }
    TQ_FORWARD(tq_gmodel_layers(m, e->gkv, T, 0));
    if (rank < size - 1) {
        if (nccl) {
            TQ_FORWARD(tq_comm_gpu_send(nc, rank + 1, tq_gmodel_x_dev(m), n, tq_gmodel_stream(m)));
            return tq_gmodel_sync(m);
        }
        TQ_FORWARD(tq_gmodel_x_get(m, x, T));
        return tq_comm_send_f32(rt, rank + 1, tag, x, n);
    }
    return tq_gmodel_head(m, T, logits);
}

/* Forward one window through the (possibly distributed) model; logits valid on the last stage. */
static tq_status run_window(const tq_rt* rt, int layers_mode, engine* e, tq_comm_gpu* nc, const int* tok, int T,
                            float* x, float* logits, int tag)
{
    if (e->gm) return run_window_gpu(rt, layers_mode, e, nc, tok, T, x, logits, tag);
    tq_model* m = e->cm;
    tq_kv_cache* kv = e->ckv;
    tq_kv_reset(kv);
    int rank = layers_mode ? rt->rank : 0, size = layers_mode ? rt->size : 1;
    int hid = tq_model_hidden(m);
    if (rank == 0)
        TQ_FORWARD(tq_model_embed(m, tok, T, x));
    else
        TQ_FORWARD(tq_comm_recv_f32(rt, rank - 1, tag, x, (size_t)T * hid));
    TQ_FORWARD(tq_model_layers(m, kv, x, T, 0));
    if (rank < size - 1) return tq_comm_send_f32(rt, rank + 1, tag, x, (size_t)T * hid);
    return tq_model_head(m, x, T, logits);
}

tq_status tq_validate(const tq_rt* rt, const tq_eval_opts* o, tq_eval_metrics* mt, char** json_out)
{
    memset(mt, 0, sizeof *mt);
    if (json_out) *json_out = NULL;
    tq_status rc = TQ_OK;
    tq_wsource* src = NULL;
    tq_wsource* rsrc = NULL;
    tq_arch* arch = NULL;
    eval_models em;
    memset(&em, 0, sizeof em);
    int* tokens = NULL;
    int64_t ntok = 0;
    float *x = NULL, *lg = NULL, *lr = NULL;
    double* vals = NULL;
    int nwin = 0;
    int64_t* wb = NULL;
    int* we = NULL;
    int* ws = NULL;
    double t0 = tq_rt_time();

    const int artifact = o->model == NULL;
    const char* dir = artifact ? o->artifact : o->model;
    TQ_GOTO_FAIL(!dir, TQ_ERR_ARG, done, "eval: give --model CKPT_DIR or --artifact DIR");
    TQ_GOTO_FAIL(!o->data, TQ_ERR_ARG, done, "eval: give --data FILE (.tok or text)");
    TQ_CHECK_GOTO(open_source(dir, artifact, o, 1, &src), done);
    TQ_CHECK_GOTO(tq_arch_from_json(src->config_json(src->ctx), &arch), done);

    /* parallel mode and layer range */
    int layers_mode = o->parallel == TQ_PAR_LAYERS;
    if (o->parallel == TQ_PAR_AUTO) {
        double lim = o->mem_per_rank > 0 ? o->mem_per_rank : 16.0 * (1ull << 30);
        layers_mode = rt->size > 1 && 4.0 * (double)tq_arch_param_count(arch) > lim;
    }
    int L = arch->n_layers;
    int l0 = 0, l1 = L;
    if (layers_mode) {
        l0 = (int)((int64_t)rt->rank * L / rt->size);
        l1 = (int)((int64_t)(rt->rank + 1) * L / rt->size);
    }
    snprintf(mt->parallel, sizeof mt->parallel, "%s", layers_mode ? "layers" : "seq");
    mt->ranks = rt->size;

    /* KV codecs (parsed before loading: they decide the device too) */
    tq_kv_codec kc, vc, f16;
    TQ_CHECK_GOTO(tq_kv_codec_parse(o->kv_k ? o->kv_k : "fp16", o->qjl, &kc), done);
    TQ_CHECK_GOTO(tq_kv_codec_parse(o->kv_v ? o->kv_v : "fp16", 0, &vc), done);
    TQ_CHECK_GOTO(tq_kv_codec_parse("fp16", 0, &f16), done);

    /* device: every rank decides the same */
    int gpu = 0, gdev = -1;
    if (o->device != TQ_DEVICE_CPU) {
        char why[256] = "";
        const int present = tq_gmodel_gpu_present();
        int ok = present && tq_gmodel_supports(arch, &kc, &vc, why, sizeof why);
        if (!present) snprintf(why, sizeof why, "no GPU visible (or a build without CUDA)");
        double okd = ok;
        TQ_CHECK_GOTO(tq_rt_allreduce_min_f64(rt, &okd, 1), done);
        if (okd < 1 && o->device == TQ_DEVICE_GPU)
            TQ_GOTO_FAIL(1, !present ? TQ_ERR_NOGPU : TQ_ERR_UNSUPPORTED, done, "eval --device gpu: %s",
                         ok ? "another rank cannot use its GPU" : why);
        if (okd < 1 && present && !o->quiet && rt->rank == 0)
            TQ_LOG(TQ_LOG_INFO, "eval: running on the CPU: %s", ok ? "another rank cannot use its GPU" : why);
        gpu = okd >= 1;
        if (gpu) gdev = tq_gmodel_select_device(rt->local_rank);
    }
    snprintf(mt->device, sizeof mt->device, "%s", gpu ? "gpu" : "cpu");
    {
        tq_gpu_weights gw; /* a bad --gpu-weights fails on the CPU too */
        TQ_CHECK_GOTO(tq_gpu_weights_parse(o->gpu_weights, &gw), done);
    }
    TQ_CHECK_GOTO(engine_load(&em.em, gpu, src, artifact && !(o->weights && o->weights[0]) ? dir : NULL, l0, l1, o, gdev,
                              mt->gpu_weights, sizeof mt->gpu_weights), done);
    em.m = &em.em;
    double gpu_wbytes = em.em.gm ? (double)(tq_gmodel_weight_bytes(em.em.gm) + tq_gmodel_scratch_bytes(em.em.gm)) : 0;
    snprintf(mt->weights, sizeof mt->weights, "%s", src->desc);
    tq_wsource_free(&src);

    /* reference */
    int want_ref = !o->no_ref && (o->ref || !artifact);
    int same_model = 0;
    mt->has_ref = want_ref;
    if (want_ref) {
        same_model = !o->ref && !(o->weights && o->weights[0]);
        em.r = &em.er;
        if (same_model) {
            em.er.cm = em.em.cm;
            em.er.gm = em.em.gm;
            em.er.alias = 1;
        } else {
            const char* rd = o->ref ? o->ref : o->model;
            TQ_CHECK_GOTO(open_source(rd, 0, o, 0, &rsrc), done);
            TQ_CHECK_GOTO(engine_load(&em.er, gpu, rsrc, NULL, l0, l1, o, gdev, NULL, 0), done);
            tq_wsource_free(&rsrc);
            TQ_GOTO_FAIL(engine_vocab(em.r) != engine_vocab(em.m) || engine_hidden(em.r) != engine_hidden(em.m),
                         TQ_ERR_ARG, done, "eval: the reference model (%s) does not match the model's vocabulary/shape", rd);
        }
    }

    /* tokens */
    {
        char tokpath[4200];
        const char* tk = o->tokenizer;
        if (!tk && !artifact) {
            snprintf(tokpath, sizeof tokpath, "%s/tokenizer.bin", o->model);
            if (tq_file_exists(tokpath)) tk = tokpath;
        }
        if (!tk && o->ref) {
            snprintf(tokpath, sizeof tokpath, "%s/tokenizer.bin", o->ref);
            if (tq_file_exists(tokpath)) tk = tokpath;
        }
        TQ_CHECK_GOTO(tq_load_tokens(o->data, tk, engine_vocab(em.m), o->max_tokens, &tokens, &ntok), done);
    }
    int ctx = o->ctx > 0 ? o->ctx : 512;
    if (o->ctx <= 0 && arch->max_position > 0 && ctx > arch->max_position) ctx = arch->max_position;
    int stride = o->stride > 0 ? o->stride : ctx;
    TQ_GOTO_FAIL(ctx < 2 || stride > ctx, TQ_ERR_ARG, done, "eval: need ctx >= 2 and stride <= ctx (ctx %d, stride %d)",
                 ctx, stride);
    mt->ctx = ctx;
    mt->stride = stride;
    mt->tokens = ntok;

    /* windows: [b, e), scoring targets at stream positions >= max(prev_end, b+1) */
    {
        int64_t cap = ntok / stride + 2;
        wb = malloc((size_t)cap * sizeof(int64_t));
        we = malloc((size_t)cap * sizeof(int));
        ws = malloc((size_t)cap * sizeof(int));
        TQ_GOTO_FAIL(!wb || !we || !ws, TQ_ERR_NOMEM, done, "out of memory");
        int64_t prev_end = 0;
        for (int64_t b = 0; b < ntok; b += stride) {
            int64_t e = b + ctx < ntok ? b + ctx : ntok;
            int64_t first = prev_end > b + 1 ? prev_end : b + 1; /* first scored target position */
            wb[nwin] = b;
            we[nwin] = (int)(e - b);
            ws[nwin] = (int)(first - b - 1); /* logits row of the first scored target */
            nwin++;
            prev_end = e;
            if (e == ntok) break;
        }
    }
    mt->windows = nwin;

    /* KV caches */
    {
        TQ_CHECK_GOTO(engine_kv(em.m, &kc, &vc, ctx, o->seed), done);
        if (em.r) TQ_CHECK_GOTO(engine_kv(em.r, &f16, &f16, ctx, o->seed), done);
        snprintf(mt->kv_k, sizeof mt->kv_k, "%s", kc.name);
        snprintf(mt->kv_v, sizeof mt->kv_v, "%s", vc.name);
        int hd = arch->head_dim;
        mt->kv_k_bits = tq_kv_bits(&kc, hd);
        mt->kv_v_bits = tq_kv_bits(&vc, hd);
        /* full-attention layers only: hybrid models' linear-attention layers keep a fixed-size state */
        mt->kv_bytes_per_token = (uint64_t)arch->n_full_layers * arch->n_kv_heads *
                                 (tq_kv_vec_bytes(&kc, hd) + tq_kv_vec_bytes(&vc, hd));
    }
    if (gpu && layers_mode && rt->size > 1) {
        TQ_CHECK_GOTO(tq_comm_gpu_init(rt, gdev, &em.nc), done);
        snprintf(mt->comm, sizeof mt->comm, "%s", tq_comm_gpu_nccl(em.nc) ? "nccl" : "mpi");
    }

    int V = engine_vocab(em.m), H = engine_hidden(em.m);
    int last = !layers_mode || rt->rank == rt->size - 1;
    x = malloc((size_t)ctx * H * sizeof(float));
    if (last) {
        lg = malloc((size_t)ctx * V * sizeof(float));
        if (em.r) lr = malloc((size_t)ctx * V * sizeof(float));
    }
    vals = calloc((size_t)nwin * V_N, sizeof(double));
    TQ_GOTO_FAIL(!x || (last && (!lg || (em.r && !lr))) || !vals, TQ_ERR_NOMEM, done,
                 "out of memory (window buffers: ctx %d x vocab %d)", ctx, V);
    rc = tq_rt_agree(rt, TQ_OK);
    if (rc != TQ_OK) goto agreed;
    const int same_run = em.r && same_model && !strcmp(mt->kv_k, "fp16") && !strcmp(mt->kv_v, "fp16");

    tq_progress* prog = o->quiet ? NULL : tq_progress_start(rt, "evaluated", (double)nwin * (layers_mode ? rt->size : 1), "windows", 10.0);
    double done_w = 0;
    for (int w = 0; w < nwin && rc == TQ_OK; w++) {
        if (!layers_mode && w % rt->size != rt->rank) continue;
        if (tq_rt_peer_failed(rt)) break;
        const int* tok = tokens + wb[w];
        int T = we[w];
        if (em.r) rc = run_window(rt, layers_mode, em.r, em.nc, tok, T, x, lr, 2 * w);
        if (rc == TQ_OK && same_run && last)
            memcpy(lg, lr, (size_t)T * V * sizeof(float)); /* identical weights and KV codecs: same logits */
        else if (rc == TQ_OK && !same_run)
            rc = run_window(rt, layers_mode, em.m, em.nc, tok, T, x, lg, 2 * w + 1);
        if (rc == TQ_OK && last) {
            window_metrics(lg, em.r ? lr : NULL, tok, T, ws[w], V, vals + (size_t)w * V_N);
            for (int i = 0; i < V_N; i++)
                if (!isfinite(vals[(size_t)w * V_N + i]))
                    rc = tq_fail(TQ_ERR_NUMERIC, "eval: non-finite metric in window %d (tokens %lld..): NaN/Inf logits", w,
                                 (long long)wb[w]);
        }
        if (rc != TQ_OK && layers_mode && rt->size > 1) /* neighbours wait in point-to-point calls: stop the job */
            tq_rt_abort(rc, "eval: rank %d failed in window %d: %s", rt->rank, w, tq_last_error());
        done_w += 1;
        if (prog) tq_progress_update(prog, done_w);
    }
    if (prog) tq_progress_finish(&prog);
    rc = tq_rt_agree(rt, rc);
    if (rc != TQ_OK) goto agreed;
    /* every entry has exactly one contributing rank: the sum is exact and order-free */
    TQ_CHECK_GOTO(tq_rt_allreduce_sum_f64(rt, vals, nwin * V_N), agreed);
    TQ_CHECK_GOTO(tq_rt_allreduce_max_f64(rt, &gpu_wbytes, 1), agreed);
    mt->gpu_weight_bytes = (uint64_t)gpu_wbytes;
    {
        double s[V_N] = {0};
        for (int w = 0; w < nwin; w++) /* fixed window order */
            for (int i = 0; i < V_N; i++) s[i] += vals[(size_t)w * V_N + i];
        mt->scored = (int64_t)s[V_CNT];
        mt->nll = s[V_NLL] / s[V_CNT];
        mt->ppl = exp(mt->nll);
        if (mt->has_ref) {
            mt->ref_nll = s[V_REFNLL] / s[V_CNT];
            mt->ref_ppl = exp(mt->ref_nll);
            mt->kl = s[V_KL] / s[V_CNT];
            mt->top1 = s[V_TOP1] / s[V_CNT];
        }
    }
    mt->seconds = tq_rt_time() - t0;
    {
        double fed = 0; /* tokens run through the model (windows overlap when stride < ctx) */
        for (int w = 0; w < nwin; w++) fed += we[w];
        mt->tokens_per_s = mt->seconds > 0 ? fed / mt->seconds : 0;
    }
    if (json_out) {
        *json_out = tq_eval_metrics_json(mt);
        if (!*json_out) rc = tq_fail(TQ_ERR_NOMEM, "out of memory (metrics JSON)");
    }
    goto agreed;
done:
    rc = tq_rt_agree(rt, rc);
agreed:
    tq_wsource_free(&src);
    tq_wsource_free(&rsrc);
    tq_arch_free(&arch);
    engine_free(&em.er);
    engine_free(&em.em);
    tq_comm_gpu_free(&em.nc);
    free(tokens);
    free(x);
    free(lg);
    free(lr);
    free(vals);
    free(wb);
    free(we);
    free(ws);
    return rc;
}

char* tq_eval_metrics_json(const tq_eval_metrics* m)
{
    json_t* o = json_object();
    if (!o) return NULL;
    json_object_set_new(o, "ppl", json_real(m->ppl));
    json_object_set_new(o, "nll", json_real(m->nll));
    if (m->has_ref) {
        json_object_set_new(o, "ref_ppl", json_real(m->ref_ppl));
        json_object_set_new(o, "kl", json_real(m->kl));
        json_object_set_new(o, "top1", json_real(m->top1));
    }
    json_object_set_new(o, "ctx", json_integer(m->ctx));
    json_object_set_new(o, "stride", json_integer(m->stride));
    json_object_set_new(o, "tokens", json_integer(m->tokens));
    json_object_set_new(o, "scored", json_integer(m->scored));
    json_object_set_new(o, "windows", json_integer(m->windows));
    json_object_set_new(o, "kv_k", json_string(m->kv_k));
    json_object_set_new(o, "kv_v", json_string(m->kv_v));
    json_object_set_new(o, "kv_k_bits", json_real(m->kv_k_bits));
    json_object_set_new(o, "kv_v_bits", json_real(m->kv_v_bits));
    json_object_set_new(o, "kv_bytes_per_token", json_integer((json_int_t)m->kv_bytes_per_token));
    json_object_set_new(o, "weights", json_string(m->weights));
    json_object_set_new(o, "parallel", json_string(m->parallel));
    json_object_set_new(o, "ranks", json_integer(m->ranks));
    json_object_set_new(o, "seconds", json_real(m->seconds));
    json_object_set_new(o, "device", json_string(m->device[0] ? m->device : "cpu"));
    if (m->comm[0]) json_object_set_new(o, "gpu_comm", json_string(m->comm));
    if (m->gpu_weights[0]) {
        json_object_set_new(o, "gpu_weights", json_string(m->gpu_weights));
        json_object_set_new(o, "gpu_weight_bytes", json_integer((json_int_t)m->gpu_weight_bytes));
    }
    char* s = json_dumps(o, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
    json_decref(o);
    return s;
}
