# Tests of helper "gptqstage": GPTQ inside the quantize stage (pipeline/qgptq.h) and layer-sharded
# calibration (pipeline/calib.h, --parallel layers).
tq_add_script_test(test_gptq_stage SCRIPT gptq_stage.sh LABELS mpi TIMEOUT 300)
tq_add_script_test(test_calib_layers SCRIPT calib_layers.sh LABELS mpi ARGS ${TQ_MPIEXEC} TIMEOUT 180)
