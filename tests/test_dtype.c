/* test_dtype.c — fp16/bf16 <-> fp32 conversions are exact round trips and round to nearest even. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "dtype.h"
#include "status.h"

static void f16_round_trip_every_value(void** state)
{
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = tq_f16_to_f32((uint16_t)h);
        if (isnan(f)) {
            assert_true(isnan(tq_f16_to_f32(tq_f32_to_f16(f))));
            continue;
        }
        assert_int_equal(tq_f32_to_f16(f), h);
    }
}

static void f16_midpoints_round_to_even(void** state)
{
    (void)state;
    for (uint32_t h = 0; h < 0x7bff; h++) {
        float a = tq_f16_to_f32((uint16_t)h), b = tq_f16_to_f32((uint16_t)(h + 1));
        float mid = (float)(((double)a + (double)b) / 2);
        assert_int_equal(tq_f32_to_f16(mid), (h & 1u) ? h + 1 : h);
    }
    assert_int_equal(tq_f32_to_f16(1e6f), 0x7c00);     /* overflow -> inf */
    assert_int_equal(tq_f32_to_f16(-1e-9f), 0x8000);   /* underflow -> -0 */
}

static void bf16_round_trip_and_rne(void** state)
{
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = tq_bf16_to_f32((uint16_t)h);
        if (isnan(f)) continue;
        assert_int_equal(tq_f32_to_bf16(f), h);
    }
    /* 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125: ties to even (1.0) */
    assert_int_equal(tq_f32_to_bf16(1.00390625f), 0x3f80);
    assert_int_equal(tq_f32_to_bf16(1.01171875f), 0x3f82);
}

static void status_strings_and_messages(void** state)
{
    (void)state;
    assert_string_equal(tq_status_str(TQ_OK), "ok");
    assert_int_equal(tq_fail(TQ_ERR_CORRUPT, "tensor %s in %s", "a.weight", "x.safetensors"), TQ_ERR_CORRUPT);
    assert_string_equal(tq_last_error(), "tensor a.weight in x.safetensors");
    tq_clear_error();
    assert_string_equal(tq_last_error(), "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(f16_round_trip_every_value),
        cmocka_unit_test(f16_midpoints_round_to_even),
        cmocka_unit_test(bf16_round_trip_and_rne),
        cmocka_unit_test(status_strings_and_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
