/* test_estimate.c — the memory planner (pipeline/memplan.h), issue 8:
 *  - the seed simulation reproduced and corrected for Qwen3.5-122B-A10B: weights at 4.8944 bpw =
 *    74.71 GB, at 1.125 bpw = 17.17 GB; FP16 KV at 262,144 tokens = 6.44 GB (not 81.43 GB); 3.5-bit
 *    KV = 1.41 GB; plus what tqpipe's real codecs store (bin1 with norms kept in bf16, tq3.5 KV with its
 *    two fp16 norms per head vector);
 *  - the whole ../shared/QWEN35.md §6 table (KV FP16 @262K, 3.5-bit KV, 1-bit weights, recurrent state)
 *    for every Qwen3.5 size and Qwen3-Next, to 2 decimals in GB;
 *  - codec bytes per role add up; plan files (good, unknown tensor, bad codec, duplicate);
 *  - parse errors for --weights / --kv values. Plain C, EXIT_FAILURE on any failure. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arch.h"
#include "fileio.h"
#include "memplan.h"

#include "tq_check.h" /* defines: CHECK, n_failed, n_checks */

static tq_arch* load(const char* name)
{
    const char* s = getenv("TQ_SOURCE_DIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/jobs/configs/%s", s && *s ? s : TQ_SOURCE_DIR, name);
    char* t = NULL;
    size_t n;
    tq_arch* a = NULL;
    if (tq_read_file(path, &t, &n) != TQ_OK || tq_arch_from_json(t, &a) != TQ_OK) {
        printf("FAILED loading %s: %s\n", path, tq_last_error());
        n_failed++;
    }
    free(t);
    return a;
}

/* value in GB rounded to 2 decimals equals want */
static int gb2(double bytes, double want) { return fabs(round(bytes / 1e7) / 100.0 - want) < 1e-9; }

static double weights(const tq_arch* a, const char* spec)
{
    tq_wspec w;
    tq_wbytes b;
    if (tq_wspec_parse(spec, 0, &w) != TQ_OK || tq_memplan_weights(a, &w, TQ_BF16, &b) != TQ_OK) {
        printf("FAILED weights %s: %s\n", spec, tq_last_error());
        n_failed++;
        return -1;
    }
    return b.total;
}

static double kv(const tq_arch* a, const char* spec, double ctx)
{
    tq_kvspec k;
    if (tq_kvspec_parse(spec, &k) != TQ_OK) {
        printf("FAILED kv %s: %s\n", spec, tq_last_error());
        n_failed++;
        return -1;
    }
    return ctx * tq_memplan_kv_bytes_per_token(a, &k);
}

static void test_seed_simulation(void)
{
    tq_arch* a = load("qwen3.5-122b-a10b.json");
    if (!a) return;
    const double C = 262144;
    double q4 = weights(a, "4.8944"), b1 = weights(a, "1.125"), f16 = kv(a, "fp16", C), t35 = kv(a, "3.5", C);
    printf("122B-A10B: weights 4.8944 bpw %.4f GB, 1.125 bpw %.4f GB; KV@262144 fp16 %.4f GB, 3.5-bit %.4f GB\n",
           q4 / 1e9, b1 / 1e9, f16 / 1e9, t35 / 1e9);
    CHECK(gb2(q4, 74.71), "Q4_K_M-like weights %.4f GB", q4 / 1e9);
    CHECK(gb2(weights(a, "q4_k_m"), 74.71), "q4_k_m alias");
    CHECK(gb2(b1, 17.17), "1-bit weights %.4f GB", b1 / 1e9);
    CHECK(gb2(f16, 6.44), "FP16 KV %.4f GB", f16 / 1e9);
    CHECK(f16 / 1e9 < 81.43 / 12.0, "FP16 KV is ~12.6x below the published 81.43 GB");
    CHECK(gb2(t35, 1.41), "3.5-bit KV %.4f GB", t35 / 1e9);
    CHECK(tq_arch_kv_elems_per_token(a) * 2 == 24576, "24 KiB per token");
    /* what tqpipe's codecs really store */
    double bin1 = weights(a, "bin1"), tq35 = kv(a, "tq3.5", C), st = tq_memplan_state_bytes(a, TQ_F32);
    printf("122B-A10B real codecs: bin1 %.4f GB, tq3.5 KV %.4f GB, state %.4f MB\n", bin1 / 1e9, tq35 / 1e9, st / 1e6);
    CHECK(bin1 > b1 && bin1 < b1 * 1.001, "bin1 (norms etc. in bf16) slightly above 1.125 bpw: %.4f", bin1 / 1e9);
    CHECK(gb2(tq35, 1.46), "tq3.5 with two fp16 norms per 256-d head vector %.4f", tq35 / 1e9);
    CHECK(fabs(st / 1e6 - 156.30) < 0.005, "recurrent state %.4f MB", st / 1e6);
    /* corrected totals at 262K, batch 1 (weights + KV + state) */
    CHECK(gb2(b1 + t35 + st, 18.74), "1-bit + 3.5-bit KV total %.4f", (b1 + t35 + st) / 1e9);
    CHECK(gb2(q4 + f16 + st, 81.31), "Q4_K_M + FP16 KV total %.4f", (q4 + f16 + st) / 1e9);
    tq_arch_free(&a);
}

static void test_family_table(void)
{
    static const struct {
        const char* file;
        double kv16, kv35, w1, rs;
    } want[] = {
        /* ../shared/QWEN35.md §6: KV FP16 @262K, TurboQuant 3.5-bit, 1-bit weights (1.125 bpw), RS (GB) */
        {"qwen3.5-0.8b.json", 3.22, 0.70, 0.11, 0.02},       {"qwen3.5-2b.json", 3.22, 0.70, 0.26, 0.02},
        {"qwen3.5-4b.json", 8.59, 1.88, 0.59, 0.05},         {"qwen3.5-9b.json", 8.59, 1.88, 1.26, 0.05},
        {"qwen3.5-27b.json", 17.18, 3.76, 3.78, 0.16},       {"qwen3.5-35b-a3b.json", 5.37, 1.17, 4.87, 0.07},
        {"qwen3.5-122b-a10b.json", 6.44, 1.41, 17.17, 0.16}, {"qwen3.5-397b-a17b.json", 8.05, 1.76, 55.74, 0.20},
        {"qwen3-next-80b-a3b.json", 6.44, 1.41, 11.20, 0.08},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        tq_arch* a = load(want[i].file);
        if (!a) continue;
        double k16 = kv(a, "fp16", 262144), k35 = kv(a, "3.5", 262144), w1 = weights(a, "1.125");
        double rs = tq_memplan_state_bytes(a, TQ_F32);
        CHECK(gb2(k16, want[i].kv16), "%s FP16 KV %.4f", want[i].file, k16 / 1e9);
        CHECK(gb2(k35, want[i].kv35), "%s 3.5-bit KV %.4f", want[i].file, k35 / 1e9);
        CHECK(gb2(w1, want[i].w1), "%s 1-bit weights %.4f", want[i].file, w1 / 1e9);
        CHECK(gb2(rs, want[i].rs), "%s state %.4f", want[i].file, rs / 1e9);
        tq_arch_free(&a);
    }
}

static void test_codecs_and_plan(void)
{
    tq_arch* a = load("qwen3-moe-tiny.json");
    if (!a) return;
    tq_wspec w;
    tq_wbytes b, bf;
    CHECK(tq_wspec_parse("bf16", 0, &w) == TQ_OK && tq_memplan_weights(a, &w, TQ_BF16, &bf) == TQ_OK, "bf16");
    CHECK(bf.total == 2.0 * (double)tq_arch_param_count(a) && fabs(bf.bpw - 16) < 1e-12, "bf16 = 2 bytes/param");
    CHECK(tq_wspec_parse("tq4", 64, &w) == TQ_OK && tq_memplan_weights(a, &w, TQ_BF16, &b) == TQ_OK, "tq4/g64");
    double sum = 0;
    for (int r = 0; r < TQ_ROLE_COUNT; r++) sum += b.by_role[r];
    CHECK(fabs(sum - b.total) < 1e-6 && b.total < bf.total / 3, "tq4 by role sums to total, < bf16/3");
    CHECK(b.n_coded == 96 && b.n_kept == 17, "coded %lld kept %lld", (long long)b.n_coded, (long long)b.n_kept);
    /* exact: a linear tensor costs tq_codec_bytes */
    const tq_arch_tensor* t = tq_arch_find(a, "model.layers.1.mlp.experts.0.down_proj.weight");
    CHECK(t && fabs(b.by_role[TQ_ROLE_EXPERT_DOWN] -
                    3.0 * 8 * (double)tq_codec_bytes(&w.codec, tq_arch_tensor_rows(t), tq_arch_tensor_cols(t))) < 1e-6,
          "expert down bytes");

    /* plan file */
    char dir[] = "/tmp/tq_test_est_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char path[256];
    snprintf(path, sizeof path, "%s/plan.txt", dir);
    const char* plan = "# allocation plan\n\nmodel.embed_tokens.weight int8\n"
                       "model.layers.1.mlp.experts.0.down_proj.weight   tq2:g64  # bytes=1 omega=2 role=x\n"
                       "model.layers.2.mlp.experts.1.up_proj.weight tq3 256\n"
                       "mtp.fc.weight bf16\n";
    tq_write_file_atomic(path, plan, strlen(plan));
    w.kind = TQ_WSPEC_PLAN;
    w.plan = path;
    CHECK(tq_memplan_weights(a, &w, TQ_BF16, &b) == TQ_OK, "plan: %s", tq_last_error());
    tq_codec i8, t2;
    tq_codec_parse("int8", 0, &i8);
    tq_codec_parse("tq2", 64, &t2);
    tq_codec t3;
    tq_codec_parse("tq3", 256, &t3);
    double want = bf.total - 2.0 * 512 * 64 - 2.0 * 64 * 32 - 2.0 * 32 * 64 + (double)tq_codec_bytes(&i8, 512, 64) +
                  (double)tq_codec_bytes(&t2, 64, 32) + (double)tq_codec_bytes(&t3, 32, 64);
    CHECK(fabs(b.total - want) < 1e-6 && b.n_coded == 3 && b.n_plan_unlisted == a->n_tensors - 3, "plan bytes %.0f vs %.0f",
          b.total, want);
    const char* bad0 = "model.norm.weight tq4:gx\n";
    tq_write_file_atomic(path, bad0, strlen(bad0));
    CHECK(tq_memplan_weights(a, &w, TQ_BF16, &b) == TQ_ERR_FORMAT && strstr(tq_last_error(), "plan.txt:1"),
          "bad group label: %s", tq_last_error());
    const char* bad1 = "model.layers.9.mlp.gate.weight tq4\n";
    tq_write_file_atomic(path, bad1, strlen(bad1));
    CHECK(tq_memplan_weights(a, &w, TQ_BF16, &b) == TQ_ERR_FORMAT && strstr(tq_last_error(), "plan.txt:1") &&
              strstr(tq_last_error(), "layers.9.mlp.gate.weight"), "unknown tensor: %s", tq_last_error());
    const char* bad2 = "\n\nmodel.norm.weight tq9\n";
    tq_write_file_atomic(path, bad2, strlen(bad2));
    CHECK(tq_memplan_weights(a, &w, TQ_BF16, &b) == TQ_ERR_FORMAT && strstr(tq_last_error(), "plan.txt:3"),
          "bad codec: %s", tq_last_error());
    const char* bad3 = "model.norm.weight f32\nmodel.norm.weight bf16\n";
    tq_write_file_atomic(path, bad3, strlen(bad3));
    CHECK(tq_memplan_weights(a, &w, TQ_BF16, &b) == TQ_ERR_FORMAT && strstr(tq_last_error(), "twice"), "dup: %s",
          tq_last_error());
    const char* bad4 = "model.norm.weight\n";
    tq_write_file_atomic(path, bad4, strlen(bad4));
    CHECK(tq_memplan_weights(a, &w, TQ_BF16, &b) == TQ_ERR_FORMAT, "missing codec");
    unlink(path);
    rmdir(dir);

    /* parse errors */
    CHECK(tq_wspec_parse("tq9", 0, &w) == TQ_ERR_ARG && strstr(tq_last_error(), "tq9"), "bad codec");
    CHECK(tq_wspec_parse("0", 0, &w) == TQ_ERR_ARG, "0 bpw");
    CHECK(tq_wspec_parse("Q4_K_M", 0, &w) == TQ_OK && w.kind == TQ_WSPEC_BPW && w.bpw == 4.8944, "alias case");
    tq_kvspec k;
    CHECK(tq_kvspec_parse("tq7", &k) == TQ_ERR_ARG, "bad kv");
    CHECK(tq_kvspec_parse("fp16", &k) == TQ_OK && fabs(tq_memplan_kv_bits(a, &k) - 16) < 1e-12, "fp16 16 bits");
    CHECK(tq_kvspec_parse("int8", &k) == TQ_OK && fabs(tq_memplan_kv_bits(a, &k) - (8 + 16.0 / 16)) < 1e-12,
          "int8 8 bits + fp16 scale per 16-d head vector: %.4f", tq_memplan_kv_bits(a, &k));
    CHECK(tq_memplan_state_bytes(a, TQ_F32) == 0, "no linear attention, no state");
    tq_arch_free(&a);
}

int main(void)
{
    test_seed_simulation();
    test_family_table();
    test_codecs_and_plan();
    printf("%s: %d checks, %d failed\n", n_failed ? "FAILED" : "ok", n_checks, n_failed);
    return n_failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
