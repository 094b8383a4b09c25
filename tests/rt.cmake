# MPI runtime (pipeline/rt.c), unit verification (pipeline/verify_units.c) and `tqpipe inspect`.
# Owner: helper "rt".

# Collective error agreement, collectives, progress: as a singleton and under mpirun -np 2 / -np 4.
tq_add_test(test_rt_agree SOURCES test_rt_agree.c LABELS mpi NP 2 TIMEOUT 120)
add_test(NAME test_rt_agree_np4 COMMAND ${TQ_MPIEXEC} ${TQ_MPI_FLAGS} -np 4 $<TARGET_FILE:test_rt_agree>)
add_test(NAME test_rt_agree_np1 COMMAND $<TARGET_FILE:test_rt_agree>)
set_tests_properties(test_rt_agree_np4 test_rt_agree_np1 PROPERTIES LABELS mpi TIMEOUT 120
  ENVIRONMENT "${TQ_TEST_ENV}")

# A rank that fails / is killed / exits / aborts ends the whole job quickly (np 2 and 4).
add_executable(rt_fault_prog rt_fault_prog.c)
target_compile_options(rt_fault_prog PRIVATE ${TQ_C_WARNINGS})
target_link_libraries(rt_fault_prog PRIVATE tqcore)
tq_add_script_test(test_rt_fault SCRIPT test_rt_fault.sh LABELS mpi TIMEOUT 400
  ARGS $<TARGET_FILE:rt_fault_prog> ${TQ_MPIEXEC})

# Unit verification: NaN/Inf counts, checksums vs the bytes written, row slices, truncation, and the
# collective gather (np 1 and 2).
tq_add_test(test_verify_units SOURCES test_verify_units.c LABELS mpi NP 2 TIMEOUT 120)
add_test(NAME test_verify_units_np1 COMMAND $<TARGET_FILE:test_verify_units>)
set_tests_properties(test_verify_units_np1 PROPERTIES LABELS cpu TIMEOUT 120 ENVIRONMENT "${TQ_TEST_ENV}")

# `tqpipe inspect` on converted stories260K and a 122B-shaped synth checkpoint; NaN/Inf/truncation/
# descriptor-mismatch detection under mpirun -np 2.
tq_add_script_test(test_inspect SCRIPT test_inspect.sh LABELS mpi TIMEOUT 300)
