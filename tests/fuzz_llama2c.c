/* fuzz_llama2c.c — fuzz target for the llama2.c header validator (pipeline/llama2c.c,
 * tq_l2c_parse_header). Input: the 28-byte header, then optionally a u64 LE file size (else the input
 * length is the file size), so the fuzzer explores header fields against file sizes.
 *
 * CTest runs the replay main (tests/golden/fuzz/llama2c/ + 4000 deterministic mutations).
 * libFuzzer (clang 14 here):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -DTQ_FUZZING -D_GNU_SOURCE -DTQ_SOURCE_DIR='"."' \
 *     -Ipipeline -Itests tests/fuzz_llama2c.c pipeline/llama2c.c pipeline/fileio.c pipeline/status.c \
 *     -o /tmp/fuzz_llama2c
 *   /tmp/fuzz_llama2c -max_total_time=60 /tmp/corpus tests/golden/fuzz/llama2c
 * Commit any crash-* input it finds to tests/golden/fuzz/llama2c/ named after the bug. */
#include "fuzz_common.h"
#include "llama2c.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    uint64_t fsize = size;
    if (size >= 36) {
        fsize = 0;
        for (int i = 7; i >= 0; i--) fsize = (fsize << 8) | data[28 + i];
    }
    tq_l2c_config cfg;
    tq_l2c_layout lay;
    tq_status rc = tq_l2c_parse_header(data, size, fsize, "fuzz.bin", &cfg, &lay);
    if (rc == TQ_OK && (lay.total_bytes != fsize || cfg.head_dim <= 0 || cfg.dim != cfg.head_dim * cfg.n_heads)) abort();
    if (rc != TQ_OK && rc != TQ_ERR_FORMAT && rc != TQ_ERR_CORRUPT && rc != TQ_ERR_UNSUPPORTED) abort();
    tq_fuzz_require_clean(rc);
    return 0;
}

#ifndef TQ_FUZZING
int main(void)
{
    /* stories260K's header + its file size */
    const int32_t h[7] = {64, 172, 5, 8, 4, 512, 512};
    uint8_t seed[36];
    memcpy(seed, h, 28);
    uint64_t fs = 1056540;
    for (int i = 0; i < 8; i++) seed[28 + i] = (uint8_t)(fs >> (8 * i));
    return tq_fuzz_main("llama2c", seed, sizeof seed, 4000, NULL);
}
#endif
