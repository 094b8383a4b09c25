# Hybrid Qwen3.5 / Qwen3-Next forward pass (helper "hybrid"): C forward vs the numpy fp64 reference
# (tests/infer_ref.py) on tiny synth checkpoints of qwen3_5, qwen3_5_moe (per-expert and fused experts)
# and qwen3_next; prefill == token-by-token decode, layer split, KV bytes of full-attention layers only
# (tests/test_hybrid.c, driven by the script); rank-count invariance under mpirun -np 1/2.
add_executable(test_hybrid test_hybrid.c)
target_compile_options(test_hybrid PRIVATE ${TQ_C_WARNINGS})
target_link_libraries(test_hybrid PRIVATE tqcore)
tq_add_script_test(infer_hybrid SCRIPT infer_hybrid.sh LABELS cpu TIMEOUT 120 ARGS $<TARGET_FILE:test_hybrid>)
