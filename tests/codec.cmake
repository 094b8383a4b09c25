# Codecs (kernels/): Lloyd-Max vs REFERENCE.md, Hadamard, every codec's bytes / round trip /
# determinism / slices / edge values; codec-stats CLI on 1e6 Gaussian values.
tq_add_test(test_codec SOURCES test_codec.c LABELS cpu TIMEOUT 120)
tq_add_script_test(test_codec_stats SCRIPT test_codec_stats.sh LABELS cpu TIMEOUT 300)
