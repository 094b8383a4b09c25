# Tests of helper "alloc": Hessian accumulation, GPTQ, sensitivity table, allocation, plan file.
tq_add_test(test_hessian SOURCES test_hessian.c LABELS cpu)
tq_add_test(test_alloc SOURCES test_alloc.c LABELS cpu)
