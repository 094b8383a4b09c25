# Checkpoint I/O: safetensors reader + writer, llama2.c reader, `tqpipe convert`, and the fuzz targets'
# replay drivers (corpus in tests/golden/fuzz/<target>/). Owner: helper "ckpt".
tq_add_test(test_safetensors SOURCES test_safetensors.c LABELS cpu TIMEOUT 60)
tq_add_test(test_convert SOURCES test_convert.c LABELS cpu TIMEOUT 60)
tq_add_test(fuzz_safetensors SOURCES fuzz_safetensors.c LABELS cpu TIMEOUT 60)
tq_add_test(fuzz_st_index SOURCES fuzz_st_index.c LABELS cpu TIMEOUT 60)
tq_add_test(fuzz_llama2c SOURCES fuzz_llama2c.c LABELS cpu TIMEOUT 60)
# The CLI end to end: convert, reverse, byte-compare (script drives the tqpipe binary).
tq_add_script_test(test_convert_cli SCRIPT test_convert_cli.sh LABELS cpu TIMEOUT 120)
# Benchmark (not a test): reader throughput from page cache vs cat. Run by hand, see the file header.
add_executable(bench_ckpt_read bench_ckpt_read.c)
target_compile_options(bench_ckpt_read PRIVATE ${TQ_C_WARNINGS})
target_link_libraries(bench_ckpt_read PRIVATE tqcore)
# File helpers and hash wrappers (pipeline/fileio.c, pipeline/hash.c).
tq_add_test(test_fileio SOURCES test_fileio.c LABELS cpu TIMEOUT 60)
