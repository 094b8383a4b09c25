# Core runtime helpers: dtype conversions, status strings, logging.
tq_add_test(test_dtype SOURCES test_dtype.c LABELS cpu)
