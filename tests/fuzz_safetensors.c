/* fuzz_safetensors.c — fuzz target for the safetensors header parser (pipeline/safetensors.c via
 * tq_st_validate_buffer: the same code tq_ckpt_open runs on each file). The input is a whole file.
 *
 * CTest runs the replay main (tests/golden/fuzz/safetensors/ + 4000 deterministic mutations).
 * libFuzzer (clang 14 here):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -DTQ_FUZZING -D_GNU_SOURCE -DTQ_SOURCE_DIR='"."' \
 *     -Ipipeline -Itests tests/fuzz_safetensors.c pipeline/safetensors.c pipeline/fileio.c \
 *     pipeline/status.c -ljansson -o /tmp/fuzz_safetensors
 *   /tmp/fuzz_safetensors -max_total_time=120 -max_len=4096 /tmp/corpus tests/golden/fuzz/safetensors
 * Commit any crash-* input it finds to tests/golden/fuzz/safetensors/ named after the bug. */
#include "fuzz_common.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    int64_t n = -1;
    tq_status rc = tq_st_validate_buffer(data, size, "fuzz.safetensors", &n);
    if (rc == TQ_OK && n < 0) abort();
    if (rc != TQ_OK && rc != TQ_ERR_FORMAT && rc != TQ_ERR_CORRUPT && rc != TQ_ERR_UNSUPPORTED) abort();
    tq_fuzz_require_clean(rc);
    return 0;
}

#ifndef TQ_FUZZING
/* keep the u64 header length equal to "everything up to the last '}' (+ padding)" half of the time */
static void fix_len(uint8_t* d, size_t len)
{
    if (len < 9) return;
    size_t end = 0;
    for (size_t i = 8; i < len; i++)
        if (d[i] == '}') end = i + 1;
    if (!end) return;
    uint64_t h = end - 8;
    for (int i = 0; i < 8; i++) d[i] = (uint8_t)(h >> (8 * i));
}

int main(void)
{
    static const char json[] =
        "{\"__metadata__\":{\"format\":\"pt\"},"
        "\"a.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
        "\"b.weight\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,32]},"
        "\"c\":{\"dtype\":\"F16\",\"shape\":[],\"data_offsets\":[32,34]}}";
    uint8_t seed[8 + sizeof json + 40];
    uint64_t h = sizeof json - 1;
    for (int i = 0; i < 8; i++) seed[i] = (uint8_t)(h >> (8 * i));
    memcpy(seed + 8, json, h);
    for (int i = 0; i < 34; i++) seed[8 + h + i] = (uint8_t)i;
    return tq_fuzz_main("safetensors", seed, 8 + h + 34, 4000, fix_len);
}
#endif
