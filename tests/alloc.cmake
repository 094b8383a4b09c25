# Tests of helper "alloc": Hessian accumulation, GPTQ, sensitivity table, allocation, plan file.
tq_add_test(test_hessian SOURCES test_hessian.c LABELS cpu)
tq_add_test(test_alloc SOURCES test_alloc.c LABELS cpu)
tq_add_test(test_gptq SOURCES test_gptq.c LABELS cpu)
tq_add_test(test_plan_fuzz SOURCES test_plan_fuzz.c LABELS cpu)
add_executable(test_calib_mpi test_calib_mpi.c)
target_compile_options(test_calib_mpi PRIVATE ${TQ_C_WARNINGS})
target_link_libraries(test_calib_mpi PRIVATE tqcore)
tq_add_script_test(test_calib_ranks SCRIPT calib_ranks.sh LABELS mpi ARGS $<TARGET_FILE:test_calib_mpi> ${TQ_MPIEXEC} TIMEOUT 120)
tq_add_script_test(test_alloc_cli SCRIPT alloc_cli.sh LABELS mpi ARGS ${TQ_MPIEXEC} TIMEOUT 300)
# Benchmarks (built, not run by CTest): GPTQ CPU time per layer.
add_executable(gptq_bench bench/gptq_bench.c)
target_compile_options(gptq_bench PRIVATE ${TQ_C_WARNINGS})
target_link_libraries(gptq_bench PRIVATE tqcore)
