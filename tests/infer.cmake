# Inference engine tests (helper "infer"): KV cache codecs, tokenizer, golden greedy text, stories260K
# perplexity with KV codecs, rank-count invariance (seq and layer split) under mpirun.
tq_add_test(test_kvcache SOURCES test_kvcache.c LABELS cpu)
tq_add_test(test_tokenizer SOURCES test_tokenizer.c LABELS cpu)
tq_add_script_test(infer_golden SCRIPT infer_golden.sh LABELS cpu TIMEOUT 120)
tq_add_script_test(infer_ppl SCRIPT infer_ppl.sh LABELS cpu TIMEOUT 300)
tq_add_script_test(infer_ranks SCRIPT infer_ranks.sh LABELS mpi TIMEOUT 300)
tq_add_script_test(infer_families SCRIPT infer_families.sh LABELS cpu TIMEOUT 120)
tq_add_script_test(infer_make_tokens SCRIPT infer_make_tokens.sh LABELS cpu TIMEOUT 120)
