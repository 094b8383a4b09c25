/* fuzz_arch_config.c — fuzz target for the config.json parser of the architecture descriptor
 * (pipeline/arch.c tq_arch_from_json / tq_arch_from_json_layout): any input must give either TQ_OK with a
 * sorted, duplicate-free, non-empty inventory, or TQ_ERR_FORMAT / TQ_ERR_UNSUPPORTED with a message.
 *
 * CTest runs the replay main (tests/golden/fuzz/arch_config/ + 4000 deterministic mutations of a small
 * Qwen3.5-MoE hybrid config). libFuzzer (clang 14 here):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -DTQ_FUZZING -D_GNU_SOURCE -DTQ_SOURCE_DIR='"."' \
 *     -Ipipeline -Itests tests/fuzz_arch_config.c pipeline/arch.c pipeline/status.c \
 *     tests/fuzz_arch_stub.c -ljansson -o /tmp/fuzz_arch_config
 *   /tmp/fuzz_arch_config -max_total_time=120 -max_len=4096 -rss_limit_mb=1024 /tmp/corpus \
 *     tests/golden/fuzz/arch_config
 * Commit any crash-* input it finds to tests/golden/fuzz/arch_config/ named after the bug. */
#include "arch.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    char* text = malloc(size + 1);
    if (!text) abort();
    memcpy(text, data, size);
    text[size] = 0;
    for (int fused = 0; fused <= 1; fused++) {
        tq_arch* a = NULL;
        tq_status rc = tq_arch_from_json_layout(text, fused, &a);
        if (rc == TQ_OK) {
            if (!a || a->n_tensors <= 0 || a->n_layers <= 0 || tq_arch_param_count(a) <= 0) abort();
            for (int64_t i = 1; i < a->n_tensors; i++)
                if (strcmp(a->tensors[i - 1].name, a->tensors[i].name) >= 0) abort();
            if (a->n_full_layers + a->n_linear_layers != a->n_layers) abort();
            if (tq_arch_active_param_count(a) <= 0 || tq_arch_active_param_count(a) > tq_arch_param_count(a)) abort();
        } else {
            if (a) abort();
            if (rc != TQ_ERR_FORMAT && rc != TQ_ERR_UNSUPPORTED) {
                fprintf(stderr, "fuzz: unexpected status %d: %s\n", (int)rc, tq_last_error());
                abort();
            }
        }
        tq_arch_free(&a);
        tq_fuzz_require_clean(rc);
    }
    free(text);
    return 0;
}

#ifndef TQ_FUZZING
int main(void)
{
    static const char seed[] =
        "{\"model_type\": \"qwen3_5_moe\", \"text_config\": {\"model_type\": \"qwen3_5_moe_text\", \"hidden_size\": 16,"
        " \"num_hidden_layers\": 4, \"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"head_dim\": 8,"
        " \"vocab_size\": 32, \"num_experts\": 4, \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 8,"
        " \"shared_expert_intermediate_size\": 8, \"linear_num_key_heads\": 2, \"linear_num_value_heads\": 4,"
        " \"linear_key_head_dim\": 4, \"linear_value_head_dim\": 4, \"tie_word_embeddings\": true,"
        " \"layer_types\": [\"linear_attention\", \"linear_attention\", \"linear_attention\", \"full_attention\"],"
        " \"mlp_only_layers\": [], \"rope_parameters\": {\"rope_theta\": 1e7, \"partial_rotary_factor\": 0.25}}}";
    return tq_fuzz_main("arch_config", (const uint8_t*)seed, sizeof seed - 1, 4000, NULL);
}
#endif
