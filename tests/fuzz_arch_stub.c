/* fuzz_arch_stub.c — checkpoint-reader stubs so the libFuzzer build of fuzz_arch_config links
 * pipeline/arch.c alone (tq_arch_from_ckpt / tq_arch_check_ckpt are not fuzzed there). Not in CTest. */
#include "ckpt.h"
const char* tq_ckpt_config_json(const tq_ckpt* c) { (void)c; return 0; }
const char* tq_ckpt_dir(const tq_ckpt* c) { (void)c; return ""; }
int64_t tq_ckpt_count(const tq_ckpt* c) { (void)c; return 0; }
const tq_tensor_info* tq_ckpt_tensor(const tq_ckpt* c, int64_t i) { (void)c; (void)i; return 0; }
