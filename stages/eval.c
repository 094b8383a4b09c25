/* eval.c — `tqpipe eval` (perplexity / KL / top-1 of a checkpoint or artifact, with KV cache codecs,
 * over MPI ranks: pipeline/validate.h) and `tqpipe generate` (greedy decoding, printed as llama2.c's
 * run.c prints it).
 *
 *   tqpipe eval --model runs/s260k/hf --data jobs/data/tinystories_valid.txt --ctx 256 --kv-k tq3 --kv-v tq3
 *   mpirun -np 4 tqpipe eval --artifact runs/x/artifact --ref ckpt/ --data tokens.tok --parallel layers --json
 *   tqpipe generate --model runs/s260k/hf --steps 200
 * Both take --device auto|cpu|gpu (pipeline/model_gpu.h: the CUDA forward pass). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "artifact.h" // defines: tq_artifact_set_metrics
#include "commands.h"
#include "fileio.h"   // defines: tq_file_exists
#include "model.h"
#include "model_gpu.h" // defines: tq_device_parse, tq_gmodel_load, tq_gmodel_forward
#include "rt.h"
#include "tokenizer.h"
#include "validate.h"

static void eval_usage(FILE* f)
{
    fprintf(f,
            "usage: tqpipe eval (--model CKPT_DIR | --artifact DIR) --data FILE [options]\n\n"
            "Perplexity of a model over a token stream, and (against a reference: the original weights with an\n"
            "fp16 KV cache) the mean KL divergence of the next-token distributions and the top-1 agreement.\n"
            "Windows of --ctx tokens every --stride tokens, each from an empty cache; every token is scored once.\n\n"
            "  --data FILE        .tok = raw little-endian int32 ids (python/make_tokens.py); else UTF-8 text for\n"
            "                     the llama2.c tokenizer, stories separated by lines <|endoftext|>, BOS per story\n"
            "  --tokenizer FILE   llama2.c tokenizer for text data (default CKPT_DIR/tokenizer.bin)\n"
            "  --ctx N            window length (default min(512, max_position_embeddings))\n"
            "  --stride S         window step (default ctx)\n"
            "  --max-tokens N     use the first N tokens only\n"
            "  --kv-k CODEC       key cache codec: f32 fp16 bf16 int8 tq2 tq3 tq4 tq2.5 tq3.5 (default fp16)\n"
            "  --kv-v CODEC       value cache codec (same names); tq codecs take a '+nc' suffix (norm correction:\n"
            "                     the decoded vector keeps the input's norm; same bytes)\n"
            "  --qjl              add the 1-bit QJL residual stage to tq keys (same total bits)\n"
            "  --weights CODEC    quantize the model's linear weights in memory first (e.g. tq4, tq4r4, bin1)\n"
            "  --group G          group size for --weights (default 128)   --quant-embed: embeddings too\n"
            "  --seed N           rotation seed (default 42)\n"
            "  --ref CKPT_DIR     reference checkpoint (default: --model itself with fp16 KV)\n"
            "  --no-ref           perplexity only\n"
            "  --parallel MODE    seq (whole model per rank, windows spread), layers (pipeline parallel),\n"
            "                     auto (default: seq unless the fp32 model exceeds --mem-per-rank GB, 16)\n"
            "  --threads N        BLAS threads per rank (default 1, so numbers do not depend on the machine)\n"
            "  --device D         auto (default: the GPU when this build has CUDA, a GPU is visible and the model\n"
            "                     family and KV codecs run there), cpu, gpu. GPU: llama, mistral, qwen2, qwen3,\n"
            "                     qwen3_moe, qwen3_5, qwen3_5_moe, qwen3_next (TQ_GPU_HYBRID=0: those three on\n"
            "                     the CPU); KV f32 fp16 bf16 int8 tq2 tq3 tq4 (+nc); one GPU per rank\n"
            "                     (local rank modulo the GPU count); --parallel layers passes activations with\n"
            "                     NCCL, or through the host when ranks share a GPU\n"
            "  --gpu-weights W    how the GPU holds the weights: auto (default: packed for --artifact, else f32),\n"
            "                     packed (the artifact's tensors as stored, each with its own codec, dequantized\n"
            "                     per GEMM into one bf16 scratch: GPU memory = packed bytes + the largest matrix in\n"
            "                     bf16; the --ref checkpoint then loads in bf16), packed-f32 (fp32 scratch and\n"
            "                     GEMMs: agrees with the CPU), bf16, f32 (dequantized at load)\n"
            "  --gpu-bf16         same as --gpu-weights bf16 (GPU weights and GEMM inputs in bf16)\n"
            "  --save-metrics     with --artifact: store the metrics JSON in the artifact index\n"
            "  --json             print the metrics as JSON\n");
}

static int parse_int(const char* s, long long* v)
{
    char* e;
    *v = strtoll(s, &e, 10);
    return *s && !*e;
}

int tq_cmd_eval(int argc, char** argv)
{
    tq_eval_opts o;
    tq_eval_opts_init(&o);
    int json = 0, save = 0;
    for (int i = 1; i < argc; i++) {
        const char* a = argv[i];
        const char* v = i + 1 < argc ? argv[i + 1] : NULL;
        long long n = 0;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            eval_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--qjl")) {
            o.qjl = 1;
        } else if (!strcmp(a, "--no-ref")) {
            o.no_ref = 1;
        } else if (!strcmp(a, "--quant-embed")) {
            o.quant_embed = 1;
        } else if (!strcmp(a, "--save-metrics")) {
            save = 1;
        } else if (!strcmp(a, "--gpu-bf16")) {
            o.gpu_bf16 = 1;
            o.gpu_weights = "bf16";
        } else if (v && !strcmp(a, "--gpu-weights")) {
            tq_gpu_weights gw;
            if (tq_gpu_weights_parse(v, &gw) != TQ_OK) {
                fprintf(stderr, "tqpipe eval: %s\n", tq_last_error());
                return 2;
            }
            o.gpu_weights = v;
            i++;
        } else if (v && !strcmp(a, "--device")) {
            tq_device dv;
            if (tq_device_parse(v, &dv) != TQ_OK) {
                fprintf(stderr, "tqpipe eval: %s\n", tq_last_error());
                return 2;
            }
            o.device = (int)dv;
            i++;
        } else if (!strcmp(a, "--quiet")) {
            o.quiet = 1;
        } else if (v && !strcmp(a, "--model")) {
            o.model = v, i++;
        } else if (v && !strcmp(a, "--artifact")) {
            o.artifact = v, i++;
        } else if (v && !strcmp(a, "--ref")) {
            o.ref = v, i++;
        } else if (v && !strcmp(a, "--data")) {
            o.data = v, i++;
        } else if (v && !strcmp(a, "--tokenizer")) {
            o.tokenizer = v, i++;
        } else if (v && !strcmp(a, "--kv-k")) {
            o.kv_k = v, i++;
        } else if (v && !strcmp(a, "--kv-v")) {
            o.kv_v = v, i++;
        } else if (v && !strcmp(a, "--weights")) {
            o.weights = v, i++;
        } else if (v && !strcmp(a, "--parallel")) {
            if (!strcmp(v, "seq"))
                o.parallel = TQ_PAR_SEQ;
            else if (!strcmp(v, "layers"))
                o.parallel = TQ_PAR_LAYERS;
            else if (!strcmp(v, "auto"))
                o.parallel = TQ_PAR_AUTO;
            else {
                fprintf(stderr, "tqpipe eval: --parallel takes seq, layers or auto, not '%s'\n", v);
                return 2;
            }
            i++;
        } else if (v && (!strcmp(a, "--ctx") || !strcmp(a, "--stride") || !strcmp(a, "--max-tokens") ||
                         !strcmp(a, "--group") || !strcmp(a, "--seed") || !strcmp(a, "--mem-per-rank") ||
                         !strcmp(a, "--threads"))) {
            if (!parse_int(v, &n) || n < 0) {
                fprintf(stderr, "tqpipe eval: %s needs a non-negative integer, not '%s'\n", a, v);
                return 2;
            }
            if (!strcmp(a, "--ctx")) o.ctx = (int)n;
            if (!strcmp(a, "--stride")) o.stride = (int)n;
            if (!strcmp(a, "--max-tokens")) o.max_tokens = n;
            if (!strcmp(a, "--group")) o.weights_group = (int)n;
            if (!strcmp(a, "--seed")) o.seed = (uint64_t)n;
            if (!strcmp(a, "--mem-per-rank")) o.mem_per_rank = (double)n * 1e9;
            if (!strcmp(a, "--threads")) o.threads = (int)n;
            i++;
        } else {
            fprintf(stderr, "tqpipe eval: unexpected argument '%s'\n", a);
            eval_usage(stderr);
            return 2;
        }
    }
    if ((!o.model && !o.artifact) || (o.model && o.artifact) || !o.data) {
        fprintf(stderr, "tqpipe eval: give exactly one of --model / --artifact, and --data\n");
        eval_usage(stderr);
        return 2;
    }
    tq_rt rt;
    if (tq_rt_init(&rt, &argc, &argv) != TQ_OK) {
        fprintf(stderr, "tqpipe eval: %s\n", tq_last_error());
        return 1;
    }
    tq_ops_set_threads(o.threads > 0 ? o.threads : 1); /* 1: identical numbers whatever the rank count */
    tq_eval_metrics m;
    char* js = NULL;
    tq_status rc = tq_validate(&rt, &o, &m, &js);
    if (rc == TQ_OK && rt.rank == 0) {
        if (json) {
            printf("%s\n", js);
        } else {
            printf("model      %s\n", m.weights);
            printf("data       %s: %lld tokens, %d windows (ctx %d, stride %d), %lld scored\n", o.data,
                   (long long)m.tokens, m.windows, m.ctx, m.stride, (long long)m.scored);
            printf("kv cache   K %s (%.3f bits), V %s (%.3f bits): %llu bytes/token\n", m.kv_k, m.kv_k_bits, m.kv_v,
                   m.kv_v_bits, (unsigned long long)m.kv_bytes_per_token);
            printf("ppl        %.6f (nll %.6f)\n", m.ppl, m.nll);
            if (m.has_ref)
                printf("reference  ppl %.6f   KL %.6g nats   top-1 %.4f\n", m.ref_ppl, m.kl, m.top1);
            printf("time       %.2f s on %d rank(s), %s parallel, %s%s%s (%.0f tokens/s)\n", m.seconds, m.ranks,
                   m.parallel, m.device, m.comm[0] ? " via " : "", m.comm, m.tokens_per_s);
            if (m.gpu_weights[0])
                printf("gpu        weights %s: %.1f MiB per rank (weights + dequantize scratch)\n", m.gpu_weights,
                       (double)m.gpu_weight_bytes / (1 << 20));
        }
        if (save && o.artifact) rc = tq_artifact_set_metrics(o.artifact, js);
    }
    if (rc != TQ_OK && rt.rank == 0) fprintf(stderr, "tqpipe eval: %s\n", tq_last_error());
    free(js);
    tq_rt_finalize(&rt);
    return rc == TQ_OK ? 0 : 1;
}

// ------------------------------------------------------------------------------------------------
// generate

static void gen_usage(FILE* f)
{
    fprintf(f, "usage: tqpipe generate (--model CKPT_DIR | --artifact DIR) [--steps N] [--prompt TEXT]\n"
               "                        [--tokenizer FILE] [--kv-k CODEC] [--kv-v CODEC] [--qjl] [--tokens]\n"
               "                        [--device cpu|gpu|auto] [--gpu-bf16] [--gpu-weights W]\n\n"
               "Greedy decoding from BOS (+ the prompt), printed as llama2.c's run.c prints it (text needs a\n"
               "llama2.c tokenizer: CKPT_DIR/tokenizer.bin or --tokenizer; --tokens prints ids instead).\n"
               "KV cache f32 by default (exact). --device: cpu (default), gpu (the CUDA forward pass, fp32\n"
               "weights unless --gpu-bf16), auto (gpu when available for this model and KV codecs).\n"
               "--gpu-weights as for eval (auto: an --artifact stays packed on the GPU, bf16 GEMMs).\n");
}

int tq_cmd_generate(int argc, char** argv)
{
    const char *model = NULL, *artifact = NULL, *prompt = "", *tokp = NULL, *kk = "f32", *kvv = "f32";
    int steps = 256, qjl = 0, ids = 0, gbf16 = 0;
    tq_gpu_weights gwm = TQ_GW_AUTO;
    tq_device dev = TQ_DEVICE_CPU;
    for (int i = 1; i < argc; i++) {
        const char* a = argv[i];
        const char* v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            gen_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--qjl")) {
            qjl = 1;
        } else if (!strcmp(a, "--tokens")) {
            ids = 1;
        } else if (!strcmp(a, "--gpu-bf16")) {
            gbf16 = 1;
            gwm = TQ_GW_BF16;
        } else if (v && !strcmp(a, "--gpu-weights")) {
            if (tq_gpu_weights_parse(v, &gwm) != TQ_OK) {
                fprintf(stderr, "tqpipe generate: %s\n", tq_last_error());
                return 2;
            }
            i++;
        } else if (v && !strcmp(a, "--device")) {
            if (tq_device_parse(v, &dev) != TQ_OK) {
                fprintf(stderr, "tqpipe generate: %s\n", tq_last_error());
                return 2;
            }
            i++;
        } else if (v && !strcmp(a, "--model")) {
            model = v, i++;
        } else if (v && !strcmp(a, "--artifact")) {
            artifact = v, i++;
        } else if (v && !strcmp(a, "--prompt")) {
            prompt = v, i++;
        } else if (v && !strcmp(a, "--tokenizer")) {
            tokp = v, i++;
        } else if (v && !strcmp(a, "--kv-k")) {
            kk = v, i++;
        } else if (v && !strcmp(a, "--kv-v")) {
            kvv = v, i++;
        } else if (v && !strcmp(a, "--steps")) {
            steps = atoi(v), i++;
        } else {
            fprintf(stderr, "tqpipe generate: unexpected argument '%s'\n", a);
            gen_usage(stderr);
            return 2;
        }
    }
    if ((!model && !artifact) || steps <= 0) {
        gen_usage(stderr);
        return 2;
    }
    tq_status rc;
    tq_wsource* src = NULL;
    tq_model* m = NULL;
    tq_kv_cache* kv = NULL;
    tq_gmodel* gm = NULL;
    tq_gkv* gkv = NULL;
    tq_tokenizer* tk = NULL;
    float* logits = NULL;
    int* ptoks = NULL;
    rc = model ? tq_wsource_ckpt(model, &src) : tq_wsource_artifact(artifact, &src);
    if (rc == TQ_OK) rc = tq_model_load(src, 0, -1, &m);
    tq_wsource_free(&src);
    char path[4200];
    if (rc == TQ_OK && !tokp && model) {
        snprintf(path, sizeof path, "%s/tokenizer.bin", model);
        if (tq_file_exists(path)) tokp = path;
    }
    if (rc == TQ_OK && tokp) rc = tq_tokenizer_load(tokp, tq_model_vocab(m), &tk);
    if (rc == TQ_OK && !tk && !ids)
        rc = tq_fail(TQ_ERR_ARG, "generate: no tokenizer (give --tokenizer FILE, or --tokens to print ids)");
    tq_kv_codec kc, vc;
    if (rc == TQ_OK) rc = tq_kv_codec_parse(kk, qjl, &kc);
    if (rc == TQ_OK) rc = tq_kv_codec_parse(kvv, 0, &vc);
    int maxpos = m && tq_model_max_position(m) > 0 ? tq_model_max_position(m) : steps;
    if (rc == TQ_OK && steps > maxpos) steps = maxpos;
    if (rc == TQ_OK && dev != TQ_DEVICE_CPU) {
        char why[256] = "no GPU visible (or a build without CUDA)";
        int ok = tq_gmodel_gpu_present() && tq_gmodel_supports(tq_model_arch(m), &kc, &vc, why, sizeof why);
        if (!ok && dev == TQ_DEVICE_GPU) rc = tq_fail(TQ_ERR_UNSUPPORTED, "generate --device gpu: %s", why);
        if (ok) { /* load again onto the GPU; the CPU copy is dropped */
            tq_model_free(&m);
            tq_gmodel_opts go;
            tq_gmodel_opts_init(&go);
            tq_gmodel_opts_weights(&go, gwm, gbf16, artifact);
            rc = model ? tq_wsource_ckpt(model, &src) : tq_wsource_artifact(artifact, &src);
            if (rc == TQ_OK) rc = tq_gmodel_load(src, 0, -1, &go, &gm);
            tq_wsource_free(&src);
            if (rc == TQ_OK) rc = tq_gmodel_kv_create(gm, &kc, &vc, steps, 42, &gkv);
        }
    }
    if (rc == TQ_OK && m) rc = tq_model_kv_create(m, &kc, &vc, steps, 42, &kv);
    const int vocab = gm ? tq_gmodel_vocab(gm) : m ? tq_model_vocab(m) : 0;
    int np = 1;
    if (rc == TQ_OK) {
        ptoks = malloc((strlen(prompt) + 4) * sizeof(int));
        logits = malloc((size_t)(vocab > 0 ? vocab : 1) * sizeof(float));
        if (!ptoks || !logits) rc = tq_fail(TQ_ERR_NOMEM, "out of memory");
    }
    if (rc == TQ_OK) {
        if (tk)
            rc = tq_tokenizer_encode(tk, prompt, 1, 0, ptoks, &np);
        else
            ptoks[0] = 1;
    }
    /* llama2.c run.c loop: forward(token, pos); next = prompt or argmax; stop at BOS; print piece */
    int token = rc == TQ_OK ? ptoks[0] : 0;
    for (int pos = 0; rc == TQ_OK && pos < steps; pos++) {
        rc = gm ? tq_gmodel_forward(gm, gkv, &token, 1, pos, logits) : tq_model_forward(m, kv, &token, 1, pos, logits);
        if (rc != TQ_OK) break;
        int next;
        if (pos < np - 1) {
            next = ptoks[pos + 1];
        } else {
            next = 0;
            for (int i = 1; i < vocab; i++)
                if (logits[i] > logits[next]) next = i;
        }
        if (next == 1) break;
        if (ids) {
            printf("%d\n", next);
        } else {
            size_t len;
            const char* piece = tq_tokenizer_decode(tk, token, next, &len);
            if (tq_tokenizer_printable(piece, len)) fwrite(piece, 1, len, stdout);
        }
        fflush(stdout);
        token = next;
    }
    if (!ids) printf("\n");
    if (rc != TQ_OK) fprintf(stderr, "tqpipe generate: %s\n", tq_last_error());
    free(ptoks);
    free(logits);
    tq_kv_free(&kv);
    tq_gkv_free(&gkv);
    tq_gmodel_free(&gm);
    tq_tokenizer_free(&tk);
    tq_model_free(&m);
    return rc == TQ_OK ? 0 : 1;
}
