/* test_arch.c — the architecture descriptor (pipeline/arch.h):
 *  - exact parameter counts of the shipped configs (Qwen3.5 family and Qwen3-Next from
 *    ../shared/QWEN35.md §1.1, SmolLM2-135M, the tiny qwen3_moe) and active counts for the MoE sizes;
 *  - real HF tensor names and shapes (Qwen3.5 hybrid, Qwen3-Next fused DeltaNet projections, qwen2
 *    biases, qwen3 q/k norms, llama tied embeddings, mlp_only_layers, fused expert layout);
 *  - KV elements per token and recurrent state sizes;
 *  - bad configs -> an error naming the field; unknown model_type -> TQ_ERR_UNSUPPORTED;
 *  - fuzz-style: thousands of deterministic mutations of the shipped configs never crash, and every
 *    accepted mutation yields a sorted, duplicate-free inventory.
 *  - tq_arch_check_ckpt on crafted checkpoints (missing / unexpected / wrong shape / ignored tensors).
 * Plain C: prints FAILED lines and returns EXIT_FAILURE on any failure. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arch.h"
#include "ckpt.h"
#include "fileio.h"
#include "st_writer.h"

#include "tq_check.h" /* defines: CHECK, n_failed, n_checks */

static const char* src_dir(void)
{
    const char* s = getenv("TQ_SOURCE_DIR");
    return s && *s ? s : TQ_SOURCE_DIR;
}

static char* load_cfg(const char* name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/jobs/configs/%s", src_dir(), name);
    char* t = NULL;
    size_t n = 0;
    if (tq_read_file(path, &t, &n) != TQ_OK) {
        printf("FAILED cannot read %s: %s\n", path, tq_last_error());
        n_failed++;
        return NULL;
    }
    return t;
}

static tq_arch* arch_of(const char* name, int fused)
{
    char* t = load_cfg(name);
    if (!t) return NULL;
    tq_arch* a = NULL;
    tq_status rc = tq_arch_from_json_layout(t, fused, &a);
    CHECK(rc == TQ_OK, "%s: %s", name, tq_last_error());
    free(t);
    return a;
}

static void check_shape(const tq_arch* a, const char* name, tq_role role, int ndim, int64_t d0, int64_t d1, int64_t d2)
{
    const tq_arch_tensor* t = tq_arch_find(a, name);
    CHECK(t != NULL, "%s missing", name);
    if (!t) return;
    CHECK(t->role == role, "%s role %s, expected %s", name, tq_role_name(t->role), tq_role_name(role));
    CHECK(t->ndim == ndim, "%s ndim %d", name, t->ndim);
    CHECK(t->shape[0] == d0 && (ndim < 2 || t->shape[1] == d1) && (ndim < 3 || t->shape[2] == d2),
          "%s shape [%" PRId64 ",%" PRId64 ",%" PRId64 "]", name, t->shape[0], t->shape[1], t->shape[2]);
}

static void test_counts(void)
{
    static const struct {
        const char* file;
        int64_t total, active, kv_per_token, state;
    } want[] = {
        /* totals: ../shared/QWEN35.md §1.1; active: its rounded figures (3.46 B, 9.77 B, 17.35 B, 3.87 B) */
        {"qwen3.5-0.8b.json", 752393024LL, 752393024LL, 6144, 5050368},
        {"qwen3.5-2b.json", 1881825088LL, 1881825088LL, 6144, 5050368},
        {"qwen3.5-4b.json", 4205751296LL, 4205751296LL, 16384, 13172736},
        {"qwen3.5-9b.json", 8953803264LL, 8953803264LL, 16384, 13172736},
        {"qwen3.5-27b.json", 26895998464LL, 26895998464LL, 32768, 39223296},
        {"qwen3.5-35b-a3b.json", 34660610688LL, 3454988928LL, 10240, 16465920},
        {"qwen3.5-122b-a10b.json", 122111526912LL, 9771288576LL, 12288, 39075840},
        {"qwen3.5-397b-a17b.json", 396346350336LL, 17349040896LL, 15360, 48844800},
        {"qwen3-next-80b-a3b.json", 79674391296LL, 3874929408LL, 12288, 19759104},
        {"smollm2-135m.json", 134515008LL, 134515008LL, 30 * 2 * 3 * 64, 0},
        {"qwen3-moe-tiny.json", 288960LL, 178368LL, 4 * 2 * 2 * 16, 0},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        for (int fused = 0; fused <= 1; fused++) {
            tq_arch* a = arch_of(want[i].file, fused);
            if (!a) continue;
            CHECK(tq_arch_param_count(a) == want[i].total, "%s (fused %d): %" PRId64 " params, expected %" PRId64,
                  want[i].file, fused, tq_arch_param_count(a), want[i].total);
            CHECK(tq_arch_active_param_count(a) == want[i].active, "%s: active %" PRId64, want[i].file,
                  tq_arch_active_param_count(a));
            CHECK(tq_arch_kv_elems_per_token(a) == want[i].kv_per_token, "%s: kv/token %" PRId64, want[i].file,
                  tq_arch_kv_elems_per_token(a));
            CHECK(tq_arch_recurrent_state_elems(a) == want[i].state, "%s: state %" PRId64, want[i].file,
                  tq_arch_recurrent_state_elems(a));
            for (int64_t k = 1; k < a->n_tensors; k++)
                if (strcmp(a->tensors[k - 1].name, a->tensors[k].name) >= 0) {
                    CHECK(0, "%s: tensors not sorted at %s", want[i].file, a->tensors[k].name);
                    break;
                }
            tq_arch_free(&a);
            CHECK(a == NULL, "free sets NULL");
        }
    }
    /* the published 24 KiB/token FP16 KV of the 122B: 12288 elements x 2 bytes */
    tq_arch* a = arch_of("qwen3.5-122b-a10b.json", 0);
    if (a) {
        CHECK(tq_arch_kv_elems_per_token(a) * 2 == 24 * 1024, "122B KV bytes/token");
        CHECK(a->n_full_layers == 12 && a->n_linear_layers == 36 && a->n_moe_layers == 48, "122B layer split");
        CHECK(a->n_tensors == 37599, "122B per-expert tensor count %" PRId64, a->n_tensors);
        tq_arch_free(&a);
    }
}

static void test_names(void)
{
    tq_arch* a = arch_of("qwen3.5-122b-a10b.json", 0);
    if (a) {
        const char* P = "model.language_model.layers.";
        char n[256];
        CHECK(!strcmp(a->prefix, "model.language_model.") && a->vlm_wrapper, "VLM prefix %s", a->prefix);
        CHECK(!strcmp(a->model_type, "qwen3_5_moe"), "model_type %s", a->model_type);
        check_shape(a, "model.language_model.embed_tokens.weight", TQ_ROLE_EMBED, 2, 248320, 3072, 0);
        check_shape(a, "lm_head.weight", TQ_ROLE_LM_HEAD, 2, 248320, 3072, 0);
        check_shape(a, "model.language_model.norm.weight", TQ_ROLE_NORM, 1, 3072, 0, 0);
        snprintf(n, sizeof n, "%s3.self_attn.q_proj.weight", P);
        check_shape(a, n, TQ_ROLE_ATTN_Q, 2, 2 * 32 * 256, 3072, 0); /* gated: 2x */
        snprintf(n, sizeof n, "%s3.self_attn.k_proj.weight", P);
        check_shape(a, n, TQ_ROLE_ATTN_K, 2, 512, 3072, 0);
        snprintf(n, sizeof n, "%s3.self_attn.o_proj.weight", P);
        check_shape(a, n, TQ_ROLE_ATTN_O, 2, 3072, 8192, 0);
        snprintf(n, sizeof n, "%s3.self_attn.q_norm.weight", P);
        check_shape(a, n, TQ_ROLE_NORM, 1, 256, 0, 0);
        snprintf(n, sizeof n, "%s0.linear_attn.in_proj_qkv.weight", P);
        check_shape(a, n, TQ_ROLE_LIN_QKV, 2, 2 * 16 * 128 + 64 * 128, 3072, 0);
        snprintf(n, sizeof n, "%s0.linear_attn.in_proj_z.weight", P);
        check_shape(a, n, TQ_ROLE_LIN_Z, 2, 64 * 128, 3072, 0);
        snprintf(n, sizeof n, "%s0.linear_attn.in_proj_b.weight", P);
        check_shape(a, n, TQ_ROLE_LIN_BA, 2, 64, 3072, 0);
        snprintf(n, sizeof n, "%s0.linear_attn.in_proj_a.weight", P);
        check_shape(a, n, TQ_ROLE_LIN_BA, 2, 64, 3072, 0);
        snprintf(n, sizeof n, "%s0.linear_attn.conv1d.weight", P);
        check_shape(a, n, TQ_ROLE_LIN_CONV, 3, 12288, 1, 4);
        snprintf(n, sizeof n, "%s0.linear_attn.A_log", P);
        check_shape(a, n, TQ_ROLE_LIN_PARAM, 1, 64, 0, 0);
        snprintf(n, sizeof n, "%s0.linear_attn.dt_bias", P);
        check_shape(a, n, TQ_ROLE_LIN_PARAM, 1, 64, 0, 0);
        snprintf(n, sizeof n, "%s0.linear_attn.norm.weight", P);
        check_shape(a, n, TQ_ROLE_NORM, 1, 128, 0, 0);
        snprintf(n, sizeof n, "%s0.linear_attn.out_proj.weight", P);
        check_shape(a, n, TQ_ROLE_LIN_OUT, 2, 3072, 8192, 0);
        snprintf(n, sizeof n, "%s0.self_attn.q_proj.weight", P);
        CHECK(tq_arch_find(a, n) == NULL, "linear layer must not have self_attn");
        snprintf(n, sizeof n, "%s3.linear_attn.in_proj_qkv.weight", P);
        CHECK(tq_arch_find(a, n) == NULL, "full layer must not have linear_attn");
        snprintf(n, sizeof n, "%s47.mlp.gate.weight", P);
        check_shape(a, n, TQ_ROLE_ROUTER, 2, 256, 3072, 0);
        snprintf(n, sizeof n, "%s47.mlp.experts.255.down_proj.weight", P);
        check_shape(a, n, TQ_ROLE_EXPERT_DOWN, 2, 3072, 1024, 0);
        const tq_arch_tensor* t = tq_arch_find(a, n);
        CHECK(t && t->layer == 47 && t->expert == 255, "layer/expert of %s", n);
        snprintf(n, sizeof n, "%s0.mlp.experts.0.gate_proj.weight", P);
        check_shape(a, n, TQ_ROLE_EXPERT_GATE, 2, 1024, 3072, 0);
        snprintf(n, sizeof n, "%s0.mlp.shared_expert.up_proj.weight", P);
        check_shape(a, n, TQ_ROLE_SHARED_UP, 2, 1024, 3072, 0);
        snprintf(n, sizeof n, "%s0.mlp.shared_expert_gate.weight", P);
        check_shape(a, n, TQ_ROLE_SHARED_EXPERT_GATE, 2, 1, 3072, 0);
        snprintf(n, sizeof n, "%s0.mlp.experts.256.gate_proj.weight", P);
        CHECK(tq_arch_find(a, n) == NULL, "expert 256 does not exist");
        CHECK(tq_arch_find(a, "model.layers.0.input_layernorm.weight") == NULL, "wrong prefix not found");
        tq_arch_free(&a);
    }
    a = arch_of("qwen3.5-122b-a10b.json", 1);
    if (a) {
        check_shape(a, "model.language_model.layers.5.mlp.experts.gate_up_proj", TQ_ROLE_EXPERT_GATE_UP, 3, 256, 2048,
                    3072);
        check_shape(a, "model.language_model.layers.5.mlp.experts.down_proj", TQ_ROLE_EXPERT_DOWN, 3, 256, 3072, 1024);
        CHECK(a->n_tensors == 37599 - 48 * (3 * 256 - 2), "fused count %" PRId64, a->n_tensors);
        tq_arch_free(&a);
    }
    a = arch_of("qwen3-next-80b-a3b.json", 0);
    if (a) {
        CHECK(!strcmp(a->prefix, "model.") && !a->vlm_wrapper, "flat prefix");
        check_shape(a, "model.layers.0.linear_attn.in_proj_qkvz.weight", TQ_ROLE_LIN_QKV, 2,
                    2 * 16 * 128 + 2 * 32 * 128, 2048, 0);
        check_shape(a, "model.layers.0.linear_attn.in_proj_ba.weight", TQ_ROLE_LIN_BA, 2, 64, 2048, 0);
        check_shape(a, "model.layers.0.linear_attn.conv1d.weight", TQ_ROLE_LIN_CONV, 3, 8192, 1, 4);
        check_shape(a, "model.layers.3.self_attn.q_proj.weight", TQ_ROLE_ATTN_Q, 2, 2 * 16 * 256, 2048, 0);
        check_shape(a, "model.layers.47.mlp.experts.511.up_proj.weight", TQ_ROLE_EXPERT_UP, 2, 512, 2048, 0);
        CHECK(tq_arch_find(a, "model.layers.0.linear_attn.in_proj_z.weight") == NULL, "qwen3_next has no in_proj_z");
        CHECK(tq_arch_find(a, "model.layers.0.mlp.gate_proj.weight") == NULL, "no dense MLP (5120 unused)");
        tq_arch_free(&a);
    }
    a = arch_of("smollm2-135m.json", 0);
    if (a) {
        CHECK(a->tied_embeddings && tq_arch_find(a, "lm_head.weight") == NULL, "tied: no lm_head");
        check_shape(a, "model.layers.29.self_attn.k_proj.weight", TQ_ROLE_ATTN_K, 2, 192, 576, 0);
        check_shape(a, "model.layers.0.mlp.down_proj.weight", TQ_ROLE_MLP_DOWN, 2, 576, 1536, 0);
        CHECK(tq_arch_find(a, "model.layers.0.self_attn.q_norm.weight") == NULL, "llama has no q_norm");
        CHECK(a->n_tensors == 2 + 30 * 9, "smollm tensors %" PRId64, a->n_tensors);
        tq_arch_free(&a);
    }
    a = arch_of("qwen3-moe-tiny.json", 0);
    if (a) {
        check_shape(a, "model.layers.0.mlp.up_proj.weight", TQ_ROLE_MLP_UP, 2, 128, 64, 0); /* mlp_only_layers [0] */
        CHECK(tq_arch_find(a, "model.layers.0.mlp.gate.weight") == NULL, "layer 0 dense");
        check_shape(a, "model.layers.1.mlp.gate.weight", TQ_ROLE_ROUTER, 2, 8, 64, 0);
        check_shape(a, "model.layers.3.mlp.experts.7.down_proj.weight", TQ_ROLE_EXPERT_DOWN, 2, 64, 32, 0);
        check_shape(a, "model.layers.2.self_attn.k_norm.weight", TQ_ROLE_NORM, 1, 16, 0, 0);
        CHECK(tq_arch_find(a, "model.layers.1.mlp.shared_expert_gate.weight") == NULL, "qwen3_moe: no shared expert");
        CHECK(a->n_moe_layers == 3, "3 MoE layers");
        tq_arch_free(&a);
    }
    /* qwen2: q/k/v biases, no q_norm; llama with attention_bias: + o bias */
    const char* q2 = "{\"model_type\":\"qwen2\",\"hidden_size\":64,\"intermediate_size\":96,\"num_hidden_layers\":2,"
                     "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"vocab_size\":100,\"tie_word_embeddings\":true}";
    CHECK(tq_arch_from_json(q2, &a) == TQ_OK, "qwen2: %s", tq_last_error());
    if (a) {
        check_shape(a, "model.layers.1.self_attn.k_proj.bias", TQ_ROLE_ATTN_BIAS, 1, 32, 0, 0);
        check_shape(a, "model.layers.1.self_attn.q_proj.bias", TQ_ROLE_ATTN_BIAS, 1, 64, 0, 0);
        CHECK(tq_arch_find(a, "model.layers.1.self_attn.o_proj.bias") == NULL, "qwen2 has no o bias");
        CHECK(tq_arch_find(a, "model.layers.1.self_attn.q_norm.weight") == NULL, "qwen2 has no q_norm");
        CHECK(a->head_dim == 16, "derived head_dim");
        tq_arch_free(&a);
    }
    const char* ll = "{\"model_type\":\"mistral\",\"hidden_size\":64,\"intermediate_size\":96,\"num_hidden_layers\":1,"
                     "\"num_attention_heads\":4,\"vocab_size\":100,\"attention_bias\":true}";
    CHECK(tq_arch_from_json(ll, &a) == TQ_OK, "mistral: %s", tq_last_error());
    if (a) {
        check_shape(a, "model.layers.0.self_attn.o_proj.bias", TQ_ROLE_ATTN_BIAS, 1, 64, 0, 0);
        check_shape(a, "model.layers.0.self_attn.v_proj.weight", TQ_ROLE_ATTN_V, 2, 64, 64, 0); /* kv = heads */
        CHECK(tq_arch_find(a, "lm_head.weight") != NULL, "untied by default");
        tq_arch_free(&a);
    }
    /* hybrid without layer_types: full_attention_interval decides */
    const char* hy = "{\"model_type\":\"qwen3_5_text\",\"hidden_size\":32,\"intermediate_size\":64,\"num_hidden_layers\":6,"
                     "\"num_attention_heads\":2,\"num_key_value_heads\":1,\"head_dim\":16,\"vocab_size\":50,"
                     "\"full_attention_interval\":3,\"linear_num_key_heads\":2,\"linear_num_value_heads\":4,"
                     "\"linear_key_head_dim\":8,\"linear_value_head_dim\":8}";
    CHECK(tq_arch_from_json(hy, &a) == TQ_OK, "hybrid: %s", tq_last_error());
    if (a) {
        CHECK(a->n_full_layers == 2 && a->layer_types[2] == TQ_LAYER_FULL_ATTN && a->layer_types[5] == TQ_LAYER_FULL_ATTN &&
                  a->layer_types[0] == TQ_LAYER_LINEAR_ATTN, "interval 3");
        check_shape(a, "model.layers.2.self_attn.q_proj.weight", TQ_ROLE_ATTN_Q, 2, 64, 32, 0);
        tq_arch_free(&a);
    }
    /* role names round trip */
    for (int r = 0; r < TQ_ROLE_COUNT; r++)
        CHECK(tq_role_parse(tq_role_name((tq_role)r)) == (tq_role)r, "role %d name %s", r, tq_role_name((tq_role)r));
    CHECK(tq_role_parse("nonsense") == TQ_ROLE_COUNT, "unknown role");
    CHECK(tq_role_is_linear(TQ_ROLE_EXPERT_UP) && !tq_role_is_linear(TQ_ROLE_NORM) && !tq_role_is_linear(TQ_ROLE_LIN_CONV),
          "is_linear");
    CHECK(tq_arch_is_ignored_name("model.visual.blocks.0.attn.qkv.weight") && tq_arch_is_ignored_name("mtp.fc.weight") &&
              !tq_arch_is_ignored_name("model.language_model.norm.weight"), "ignored names");
}

static void expect_err(const char* json, tq_status want, const char* needle)
{
    tq_arch* a = NULL;
    tq_clear_error();
    tq_status rc = tq_arch_from_json(json, &a);
    CHECK(rc == want, "config %.80s: got %d, want %d (%s)", json, rc, want, tq_last_error());
    CHECK(strstr(tq_last_error(), needle) != NULL, "error '%s' should name '%s'", tq_last_error(), needle);
    CHECK(a == NULL, "no descriptor on error");
    tq_arch_free(&a);
}

static void test_bad_configs(void)
{
    expect_err("{\"model_type\":\"llama\",\"num_hidden_layers\":2,\"vocab_size\":10,\"num_attention_heads\":2,"
               "\"intermediate_size\":8}", TQ_ERR_FORMAT, "hidden_size");
    expect_err("{\"model_type\":\"gpt2\",\"hidden_size\":8}", TQ_ERR_UNSUPPORTED, "gpt2");
    expect_err("{\"hidden_size\":8}", TQ_ERR_FORMAT, "model_type");
    expect_err("{\"model_type\":\"llama\",\"hidden_size\":\"big\",\"num_hidden_layers\":2}", TQ_ERR_FORMAT, "hidden_size");
    expect_err("{\"model_type\":\"llama\",\"hidden_size\":64,\"num_hidden_layers\":2,\"vocab_size\":10,"
               "\"num_attention_heads\":3,\"num_key_value_heads\":2,\"intermediate_size\":8}", TQ_ERR_FORMAT,
               "num_key_value_heads");
    expect_err("{\"model_type\":\"llama\",\"hidden_size\":64,\"num_hidden_layers\":2,\"vocab_size\":10,"
               "\"num_attention_heads\":4}", TQ_ERR_FORMAT, "intermediate_size");
    expect_err("{\"model_type\":\"llama\",\"hidden_size\":64,\"num_hidden_layers\":-2,\"vocab_size\":10,"
               "\"num_attention_heads\":4,\"intermediate_size\":8}", TQ_ERR_FORMAT, "num_hidden_layers");
    expect_err("{\"model_type\":\"qwen3_moe\",\"hidden_size\":64,\"num_hidden_layers\":2,\"vocab_size\":10,"
               "\"num_attention_heads\":4,\"intermediate_size\":8,\"num_experts\":4,\"num_experts_per_tok\":2}",
               TQ_ERR_FORMAT, "moe_intermediate_size");
    expect_err("{\"model_type\":\"qwen3_moe\",\"hidden_size\":64,\"num_hidden_layers\":2,\"vocab_size\":10,"
               "\"num_attention_heads\":4,\"num_experts\":4,\"num_experts_per_tok\":8,\"moe_intermediate_size\":8}",
               TQ_ERR_FORMAT, "num_experts_per_tok");
    expect_err("{\"text_config\":{\"model_type\":\"qwen3_5_text\",\"hidden_size\":32,\"intermediate_size\":64,"
               "\"num_hidden_layers\":4,\"num_attention_heads\":2,\"vocab_size\":50,\"linear_num_key_heads\":2,"
               "\"linear_num_value_heads\":4,\"linear_key_head_dim\":8,\"linear_value_head_dim\":8,"
               "\"layer_types\":[\"linear_attention\",\"full_attention\"]}}", TQ_ERR_FORMAT, "layer_types");
    expect_err("{\"text_config\":{\"model_type\":\"qwen3_5_text\",\"hidden_size\":32,\"intermediate_size\":64,"
               "\"num_hidden_layers\":2,\"num_attention_heads\":2,\"vocab_size\":50,\"linear_num_key_heads\":2,"
               "\"linear_num_value_heads\":4,\"linear_key_head_dim\":8,\"linear_value_head_dim\":8,"
               "\"layer_types\":[\"linear_attention\",\"sliding\"]}}", TQ_ERR_FORMAT, "layer_types[1]");
    expect_err("{\"model_type\":\"qwen3_5_moe\",\"text_config\":{\"hidden_size\":32,\"num_hidden_layers\":2,"
               "\"num_attention_heads\":2,\"vocab_size\":50,\"num_experts\":4,\"num_experts_per_tok\":2,"
               "\"moe_intermediate_size\":8,\"shared_expert_intermediate_size\":8,\"linear_num_key_heads\":2,"
               "\"linear_num_value_heads\":4,\"linear_key_head_dim\":8}}", TQ_ERR_FORMAT, "linear_value_head_dim");
    expect_err("{\"model_type\":\"llama\",", TQ_ERR_FORMAT, "invalid JSON");
    expect_err("[1,2]", TQ_ERR_FORMAT, "object");
    expect_err("{\"model_type\":\"qwen3_moe\",\"hidden_size\":64,\"num_hidden_layers\":4000,\"vocab_size\":10,"
               "\"num_attention_heads\":4,\"num_experts\":8000,\"num_experts_per_tok\":2,\"moe_intermediate_size\":8}",
               TQ_ERR_FORMAT, "num_experts");
    tq_arch* a = NULL;
    CHECK(tq_arch_from_json(NULL, &a) == TQ_ERR_ARG, "NULL text");
}

/* xorshift for the mutation fuzzer (deterministic) */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void test_fuzz(void)
{
    static const char* files[] = {"qwen3.5-0.8b.json", "qwen3-moe-tiny.json", "smollm2-135m.json", "qwen3.5-9b.json",
                                  "qwen3.5-35b-a3b.json"};
    static const char* inserts[] = {"0", "-1", "99999999999", "1e300", "\"", "{", "}", "[", "]", ",", ":", "null",
                                    "true", "\"x\"", "3.5", "4294967297", "[]", "{}", "\\u0000"};
    int accepted = 0, rejected = 0;
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        char* base = load_cfg(files[f]);
        if (!base) continue;
        size_t blen = strlen(base);
        int iters = f < 3 ? 1500 : 150;
        for (int it = 0; it < iters; it++) {
            size_t cap = blen * 2 + 64;
            char* m = malloc(cap);
            memcpy(m, base, blen + 1);
            size_t len = blen;
            int nmut = 1 + (int)(rnd() % 4);
            for (int k = 0; k < nmut && len > 0; k++) {
                size_t pos = (size_t)(rnd() % len);
                switch (rnd() % 5) {
                case 0: m[pos] = (char)(rnd() & 0xff); break;                                         /* flip */
                case 1: memmove(m + pos, m + pos + 1, len - pos); len--; break;                        /* delete */
                case 2: { /* insert a token */
                    const char* ins = inserts[rnd() % (sizeof inserts / sizeof inserts[0])];
                    size_t il = strlen(ins);
                    if (len + il + 1 < cap) {
                        memmove(m + pos + il, m + pos, len - pos + 1);
                        memcpy(m + pos, ins, il);
                        len += il;
                    }
                    break;
                }
                case 3: m[pos] = 0; len = pos; break; /* truncate */
                default: /* replace a digit run with a big or odd number */
                    if (m[pos] >= '0' && m[pos] <= '9') m[pos] = (char)('0' + rnd() % 10);
                    break;
                }
                m[len] = 0;
            }
            tq_arch* a = NULL;
            tq_status rc = tq_arch_from_json(m, &a);
            if (rc == TQ_OK) {
                accepted++;
                int ok = a && a->n_tensors > 0 && a->n_layers > 0;
                for (int64_t i = 1; ok && i < a->n_tensors; i++) ok = strcmp(a->tensors[i - 1].name, a->tensors[i].name) < 0;
                CHECK(ok, "mutated config accepted with a bad inventory: %.200s", m);
                CHECK(tq_arch_param_count(a) > 0, "params");
            } else {
                rejected++;
                CHECK(a == NULL && tq_last_error()[0], "rejected without message");
            }
            tq_arch_free(&a);
            free(m);
        }
        free(base);
    }
    printf("fuzz: %d mutated configs accepted, %d rejected, no crash\n", accepted, rejected);
    CHECK(accepted > 0 && rejected > 0, "fuzz covered both outcomes");
}

/* Crafted checkpoints for tq_arch_check_ckpt. */
static void write_ckpt(const char* dir, const char* config, const tq_arch* a, const char* skip, const char* extra,
                       const char* reshape, int add_ignored)
{
    tq_mkdirs(dir);
    char p[4096];
    snprintf(p, sizeof p, "%s/config.json", dir);
    tq_write_file_atomic(p, config, strlen(config));
    tq_st_writer* w = NULL;
    CHECK(tq_st_writer_create_dir(dir, 0, &w) == TQ_OK, "writer: %s", tq_last_error());
    if (!w) return;
    for (int64_t i = 0; i < a->n_tensors; i++) {
        const tq_arch_tensor* t = &a->tensors[i];
        if (skip && !strcmp(t->name, skip)) continue;
        int64_t shape[4] = {t->shape[0], t->shape[1], t->shape[2], t->shape[3]};
        if (reshape && !strcmp(t->name, reshape)) shape[0] += 1;
        tq_st_writer_add(w, t->name, TQ_F32, t->ndim, shape);
    }
    int64_t one[1] = {4};
    if (extra) tq_st_writer_add(w, extra, TQ_F32, 1, one);
    if (add_ignored) {
        tq_st_writer_add(w, "model.visual.blocks.0.attn.qkv.weight", TQ_F32, 1, one);
        tq_st_writer_add(w, "mtp.fc.weight", TQ_F32, 1, one);
    }
    CHECK(tq_st_writer_begin(w) == TQ_OK, "begin: %s", tq_last_error());
    float* zero = calloc(1 << 20, sizeof(float));
    for (int64_t i = 0; i < a->n_tensors; i++) {
        const tq_arch_tensor* t = &a->tensors[i];
        if (skip && !strcmp(t->name, skip)) continue;
        int64_t n = tq_arch_tensor_numel(t);
        if (reshape && !strcmp(t->name, reshape)) n += n / t->shape[0];
        tq_st_writer_write(w, t->name, zero, (size_t)n * 4);
    }
    if (extra) tq_st_writer_write(w, extra, zero, 16);
    if (add_ignored) {
        tq_st_writer_write(w, "model.visual.blocks.0.attn.qkv.weight", zero, 16);
        tq_st_writer_write(w, "mtp.fc.weight", zero, 16);
    }
    CHECK(tq_st_writer_finish(w) == TQ_OK, "finish: %s", tq_last_error());
    tq_st_writer_free(&w);
    free(zero);
}

static void test_check_ckpt(void)
{
    char tmpl[] = "/tmp/tq_test_arch_XXXXXX";
    char* root = mkdtemp(tmpl);
    CHECK(root != NULL, "mkdtemp");
    if (!root) return;
    const char* cfg = "{\"model_type\":\"qwen3_5_moe\",\"text_config\":{\"model_type\":\"qwen3_5_moe_text\","
                      "\"hidden_size\":16,\"num_hidden_layers\":4,\"num_attention_heads\":2,\"num_key_value_heads\":1,"
                      "\"head_dim\":8,\"vocab_size\":32,\"num_experts\":4,\"num_experts_per_tok\":2,"
                      "\"moe_intermediate_size\":8,\"shared_expert_intermediate_size\":8,\"linear_num_key_heads\":2,"
                      "\"linear_num_value_heads\":4,\"linear_key_head_dim\":4,\"linear_value_head_dim\":4}}";
    tq_arch* a = NULL;
    CHECK(tq_arch_from_json(cfg, &a) == TQ_OK, "tiny qwen3_5_moe: %s", tq_last_error());
    if (!a) return;
    char d[4200];
    tq_ckpt* c = NULL;
    /* good (with vision + MTP tensors that must be ignored) */
    snprintf(d, sizeof d, "%s/good", root);
    write_ckpt(d, cfg, a, NULL, NULL, NULL, 1);
    CHECK(tq_ckpt_open(d, &c) == TQ_OK, "open good: %s", tq_last_error());
    if (c) {
        CHECK(tq_arch_check_ckpt(a, c) == TQ_OK, "good ckpt: %s", tq_last_error());
        tq_arch* b = NULL;
        CHECK(tq_arch_from_ckpt(c, &b) == TQ_OK && b && !b->fused_experts && b->n_tensors == a->n_tensors, "from_ckpt");
        tq_arch_free(&b);
        tq_ckpt_free(&c);
    }
    /* missing + unexpected + wrong shape: one error listing all three kinds */
    snprintf(d, sizeof d, "%s/bad", root);
    write_ckpt(d, cfg, a, "model.language_model.layers.2.mlp.experts.3.up_proj.weight",
               "model.language_model.layers.9.mlp.gate.weight", "model.language_model.layers.3.self_attn.k_proj.weight", 0);
    CHECK(tq_ckpt_open(d, &c) == TQ_OK, "open bad: %s", tq_last_error());
    if (c) {
        tq_status rc = tq_arch_check_ckpt(a, c);
        const char* e = tq_last_error();
        CHECK(rc == TQ_ERR_FORMAT, "bad ckpt rc %d", rc);
        CHECK(strstr(e, "1 missing") && strstr(e, "layers.2.mlp.experts.3.up_proj.weight"), "missing listed: %s", e);
        CHECK(strstr(e, "1 unexpected") && strstr(e, "layers.9.mlp.gate.weight"), "unexpected listed: %s", e);
        CHECK(strstr(e, "1 with a wrong shape") && strstr(e, "[9,16]") && strstr(e, "expected [8,16]"), "shape: %s", e);
        tq_ckpt_free(&c);
    }
    /* a flat-prefix checkpoint ("model.layers...") is accepted for a VLM-wrapper config */
    tq_arch* fa = NULL;
    /* the flat inventory comes from the same config without the text_config wrapper */
    const char* fcfg = "{\"model_type\":\"qwen3_5_moe\",\"hidden_size\":16,\"num_hidden_layers\":4,\"num_attention_heads\":2,"
                       "\"num_key_value_heads\":1,\"head_dim\":8,\"vocab_size\":32,\"num_experts\":4,\"num_experts_per_tok\":2,"
                       "\"moe_intermediate_size\":8,\"shared_expert_intermediate_size\":8,\"linear_num_key_heads\":2,"
                       "\"linear_num_value_heads\":4,\"linear_key_head_dim\":4,\"linear_value_head_dim\":4}";
    CHECK(tq_arch_from_json(fcfg, &fa) == TQ_OK, "flat: %s", tq_last_error());
    if (fa) {
        snprintf(d, sizeof d, "%s/flat", root);
        write_ckpt(d, cfg, fa, NULL, NULL, NULL, 0); /* names "model.layers...", config with text_config */
        CHECK(tq_ckpt_open(d, &c) == TQ_OK, "open flat: %s", tq_last_error());
        if (c) {
            CHECK(tq_arch_check_ckpt(a, c) == TQ_OK, "flat names accepted: %s", tq_last_error());
            tq_ckpt_free(&c);
        }
        tq_arch_free(&fa);
    }
    /* fused experts: detected by tq_arch_from_ckpt; the per-expert descriptor reports the layout */
    tq_arch* fu = NULL;
    CHECK(tq_arch_from_json_layout(cfg, 1, &fu) == TQ_OK, "fused: %s", tq_last_error());
    if (fu) {
        snprintf(d, sizeof d, "%s/fused", root);
        write_ckpt(d, cfg, fu, NULL, NULL, NULL, 0);
        CHECK(tq_ckpt_open(d, &c) == TQ_OK, "open fused: %s", tq_last_error());
        if (c) {
            tq_arch* b = NULL;
            CHECK(tq_arch_from_ckpt(c, &b) == TQ_OK && b && b->fused_experts, "fused detected");
            if (b) CHECK(tq_arch_check_ckpt(b, c) == TQ_OK, "fused check: %s", tq_last_error());
            CHECK(tq_arch_check_ckpt(a, c) == TQ_ERR_FORMAT && strstr(tq_last_error(), "expert layout"),
                  "per-expert descriptor vs fused ckpt hints: %s", tq_last_error());
            tq_arch_free(&b);
            tq_ckpt_free(&c);
        }
        tq_arch_free(&fu);
    }
    tq_arch_free(&a);
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0) printf("warning: could not remove %s\n", root);
}

int main(void)
{
    test_counts();
    test_names();
    test_bad_configs();
    test_fuzz();
    test_check_ckpt();
    printf("%s: %d checks, %d failed\n", n_failed ? "FAILED" : "ok", n_checks, n_failed);
    return n_failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
