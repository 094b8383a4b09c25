/* fuzz_st_index.c — fuzz target for the model.safetensors.index.json parser (pipeline/safetensors.c via
 * tq_st_validate_index_text: the same code tq_ckpt_open runs before opening the shards).
 *
 * CTest runs the replay main (tests/golden/fuzz/st_index/ + 4000 deterministic mutations).
 * libFuzzer (clang 14 here):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -DTQ_FUZZING -D_GNU_SOURCE -DTQ_SOURCE_DIR='"."' \
 *     -Ipipeline -Itests tests/fuzz_st_index.c pipeline/safetensors.c pipeline/fileio.c \
 *     pipeline/status.c -ljansson -o /tmp/fuzz_st_index
 *   /tmp/fuzz_st_index -max_total_time=120 -max_len=4096 /tmp/corpus tests/golden/fuzz/st_index
 * Commit any crash-* input it finds to tests/golden/fuzz/st_index/ named after the bug. */
#include "fuzz_common.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    int64_t n = -1;
    int nf = -1;
    tq_status rc = tq_st_validate_index_text((const char*)data, size, "fuzz.index.json", &n, &nf);
    if (rc == TQ_OK && (n <= 0 || nf <= 0 || nf > n)) abort();
    if (rc != TQ_OK && rc != TQ_ERR_FORMAT) abort();
    tq_fuzz_require_clean(rc);
    return 0;
}

#ifndef TQ_FUZZING
int main(void)
{
    static const char seed[] =
        "{\"metadata\": {\"total_size\": 123456},\n \"weight_map\": {\n"
        "  \"model.embed_tokens.weight\": \"model-00001-of-00002.safetensors\",\n"
        "  \"model.layers.0.mlp.up_proj.weight\": \"model-00002-of-00002.safetensors\",\n"
        "  \"model.norm.weight\": \"model-00002-of-00002.safetensors\"}}\n";
    return tq_fuzz_main("st_index", (const uint8_t*)seed, sizeof seed - 1, 4000, NULL);
}
#endif
