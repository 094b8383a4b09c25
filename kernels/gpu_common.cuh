/* gpu_common.cuh — helpers shared by the CUDA codec files: CUDA_CHECK, IEEE fp32 arithmetic that the
 * build's --use_fast_math cannot change, and bit-exact fp16/bf16 conversions (device mirrors of
 * pipeline/dtype.h).
 *
 * Why inline PTX: the top-level CMakeLists compiles CUDA with --use_fast_math, which turns every fp32
 * add/mul/div/compare (the __fadd_rn-style intrinsics included: they become add.rn.ftz.f32) into the
 * flush-to-zero variant and lets the compiler fuse a*b+c into one FMA. The CPU reference keeps fp32
 * subnormals and never fuses, so the codecs' arithmetic goes through these wrappers: each is exactly
 * one IEEE round-to-nearest operation without .ftz, and the asm keeps the compiler from contracting. */
#ifndef TQ_GPU_COMMON_CUH
#define TQ_GPU_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "status.h"
}

/* Check a CUDA runtime call; on failure record the message and return TQ_ERR_CUDA from the caller. */
#define CUDA_CHECK(expr)                                                                           \
    do {                                                                                           \
        cudaError_t const e_ = (expr);                                                             \
        if (e_ != cudaSuccess)                                                                     \
            return tq_fail(TQ_ERR_CUDA, "CUDA error %s (%s) in %s at %s:%d: %s", cudaGetErrorName(e_), \
                           cudaGetErrorString(e_), __func__, __FILE__, __LINE__, #expr);           \
    } while (0)

/* Same, but set rc and jump to a cleanup label. */
#define CUDA_CHECK_GOTO(expr, label)                                                               \
    do {                                                                                           \
        cudaError_t const e_ = (expr);                                                             \
        if (e_ != cudaSuccess) {                                                                   \
            rc = tq_fail(TQ_ERR_CUDA, "CUDA error %s (%s) in %s at %s:%d: %s", cudaGetErrorName(e_),  \
                         cudaGetErrorString(e_), __func__, __FILE__, __LINE__, #expr);             \
            goto label;                                                                            \
        }                                                                                          \
    } while (0)

/* Same for a cuBLAS call. */
#define CUBLAS_CHECK_GOTO(expr, label)                                                             \
    do {                                                                                           \
        cublasStatus_t const s_ = (expr);                                                          \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                         \
            rc = tq_fail(TQ_ERR_CUDA, "cuBLAS error %d (%s) in %s at %s:%d: %s", (int)s_,          \
                         cublasGetStatusString(s_), __func__, __FILE__, __LINE__, #expr);          \
            goto label;                                                                            \
        }                                                                                          \
    } while (0)

// ------------------------------------------------------------------------------------------------
// IEEE fp32, no flush to zero, no contraction

__device__ __forceinline__ float tq_fadd(float a, float b)
{
    float r;
    asm("add.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    return r;
}

__device__ __forceinline__ float tq_fsub(float a, float b)
{
    float r;
    asm("sub.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    return r;
}

__device__ __forceinline__ float tq_fmul(float a, float b)
{
    float r;
    asm("mul.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    return r;
}

__device__ __forceinline__ float tq_fdiv(float a, float b)
{
    float r;
    asm("div.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    return r;
}

/* a > b, a >= b, a <= b without flushing subnormal operands. */
__device__ __forceinline__ int tq_fgt(float a, float b)
{
    int r;
    asm("{ .reg .pred p; setp.gt.f32 p, %1, %2; selp.s32 %0, 1, 0, p; }" : "=r"(r) : "f"(a), "f"(b));
    return r;
}

__device__ __forceinline__ int tq_fge(float a, float b)
{
    int r;
    asm("{ .reg .pred p; setp.ge.f32 p, %1, %2; selp.s32 %0, 1, 0, p; }" : "=r"(r) : "f"(a), "f"(b));
    return r;
}

__device__ __forceinline__ int tq_fle(float a, float b)
{
    int r;
    asm("{ .reg .pred p; setp.le.f32 p, %1, %2; selp.s32 %0, 1, 0, p; }" : "=r"(r) : "f"(a), "f"(b));
    return r;
}

__device__ __forceinline__ int tq_flt(float a, float b)
{
    int r;
    asm("{ .reg .pred p; setp.lt.f32 p, %1, %2; selp.s32 %0, 1, 0, p; }" : "=r"(r) : "f"(a), "f"(b));
    return r;
}

/* floorf, without flushing. */
__device__ __forceinline__ float tq_ffloor(float a)
{
    float r;
    asm("cvt.rmi.f32.f32 %0, %1;" : "=f"(r) : "f"(a));
    return r;
}

/* double -> float, round to nearest, subnormal results kept. */
__device__ __forceinline__ float tq_d2f(double a)
{
    float r;
    asm("cvt.rn.f32.f64 %0, %1;" : "=f"(r) : "d"(a));
    return r;
}

/* float -> double, exact (subnormal inputs kept). */
__device__ __forceinline__ double tq_f2d(float a)
{
    double r;
    asm("cvt.f64.f32 %0, %1;" : "=d"(r) : "f"(a));
    return r;
}

/* Flip the sign when s != 0 (x * -1.0f exactly, zeros and subnormals included). */
__device__ __forceinline__ float tq_fsign(float x, uint32_t s)
{
    return __uint_as_float(__float_as_uint(x) ^ (s << 31));
}

__device__ __forceinline__ int tq_finite(float x)
{
    return (__float_as_uint(x) & 0x7f800000u) != 0x7f800000u;
}

// ------------------------------------------------------------------------------------------------
// fp16 / bf16, bit-exact mirrors of pipeline/dtype.h

__device__ __forceinline__ float tq_bf16_to_f32_d(uint16_t h)
{
    return __uint_as_float((uint32_t)h << 16);
}

__device__ __forceinline__ uint16_t tq_f32_to_bf16_d(float f)
{
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* fp16 -> fp32 is exact (fp16 subnormals are normal fp32 numbers): one hardware conversion. */
__device__ __forceinline__ float tq_f16_to_f32_d(uint16_t h)
{
    return __half2float(__ushort_as_half(h));
}

/* Two fp32 -> bf16 (round to nearest even, subnormals kept) in one instruction: lo in bits 0..15. Same
 * bits as tq_f32_to_bf16 for every non-NaN input (dequantized values are never NaN). */
__device__ __forceinline__ uint32_t tq_f32x2_to_bf16x2_d(float lo, float hi)
{
    uint32_t r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

/* Bit-level fp16 -> fp32 (reference copy of dtype.h, kept for host-side comparisons in device code). */
__device__ __forceinline__ float tq_f16_to_f32_bits_d(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else {
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400u));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    return __uint_as_float(u);
}

__device__ __forceinline__ uint16_t tq_f32_to_f16_d(float f)
{
    uint32_t u = __float_as_uint(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    if (a >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (a > 0x7f800000u ? 0x200u : 0));
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);
    if (a < 0x38800000u) {
        if (a < 0x33000000u) return (uint16_t)sign;
        uint32_t e = a >> 23;
        uint32_t m = (a & 0x7fffffu) | 0x800000u;
        uint32_t sh = 126 - e;
        uint32_t q = m >> sh;
        uint32_t rem = m & ((1u << sh) - 1u);
        uint32_t half = 1u << (sh - 1);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t e = (a >> 23) - 127 + 15;
    uint32_t m = a & 0x7fffffu;
    uint32_t h = (e << 10) | (m >> 13);
    uint32_t rem = m & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}

/* splitmix64 finalizer and the rotation sign bit of column j (hadamard.h): 1 means -1. */
__device__ __forceinline__ uint64_t tq_mix64_d(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

__device__ __forceinline__ uint32_t tq_rot_signbit_d(uint64_t seed, int64_t j)
{
    return (uint32_t)(tq_mix64_d(seed + 0x9E3779B97F4A7C15ull * (uint64_t)(j + 1)) >> 63);
}

#endif
