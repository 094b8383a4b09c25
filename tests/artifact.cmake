# Packed HDF5 artifacts (helper "artifact"): writer/reader/verify/publish/export unit test, the zstd
# filter as a loadable HDF5 plugin (for h5dump / other HDF5 tools via HDF5_PLUGIN_PATH), CLI tests and
# the Python reader equality test.

# The zstd filter (id 32015) as an HDF5 plugin library: HDF5_PLUGIN_PATH=<build>/plugins h5dump ...
add_library(h5z_zstd MODULE ${CMAKE_SOURCE_DIR}/pipeline/h5zstd.c)
target_compile_definitions(h5z_zstd PRIVATE TQ_H5Z_PLUGIN ${HDF5_DEFINITIONS})
target_include_directories(h5z_zstd PRIVATE ${HDF5_INCLUDE_DIRS} ${MPI_C_INCLUDE_DIRS})
target_compile_options(h5z_zstd PRIVATE ${TQ_C_WARNINGS})
target_link_libraries(h5z_zstd PRIVATE PkgConfig::ZSTD)
set_target_properties(h5z_zstd PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/plugins)

tq_add_test(test_artifact SOURCES test_artifact.c LABELS cpu TIMEOUT 120)

# Fixture: a small artifact with one tensor per codec (used by the CLI and Python tests).
add_executable(artifact_fixture artifact_fixture.c)
target_compile_options(artifact_fixture PRIVATE ${TQ_C_WARNINGS})
target_link_libraries(artifact_fixture PRIVATE tqcore)

tq_add_script_test(artifact_cli SCRIPT artifact_cli.sh LABELS cpu mpi TIMEOUT 120
  ARGS $<TARGET_FILE:artifact_fixture> ${CMAKE_BINARY_DIR}/plugins)
tq_add_script_test(artifact_python SCRIPT artifact_py.sh LABELS cpu TIMEOUT 120
  ARGS $<TARGET_FILE:artifact_fixture>)

# Benchmark program (not a test): tests/bench/artifact_bench.sh runs it.
add_executable(artifact_bench bench/artifact_bench.c)
target_compile_options(artifact_bench PRIVATE ${TQ_C_WARNINGS})
target_link_libraries(artifact_bench PRIVATE tqcore)
tq_add_script_test(artifact_enospc SCRIPT artifact_enospc.sh LABELS cpu TIMEOUT 60
  ARGS $<TARGET_FILE:artifact_fixture>)
