/* memplan.h — the memory planner behind `tqpipe estimate` (issue 8): weight bytes per role under a codec
 * (exact bytes from kernels/codec.h), an arbitrary bits-per-weight figure, or an allocation plan; KV
 * cache bytes per token (only full-attention layers hold KV; exact per-head-vector bytes from
 * kernels/kvcache.h, or an arbitrary bits-per-element figure); the fixed recurrent state of
 * linear-attention (Gated DeltaNet) layers per sequence.
 *
 *   total(context C, batch B) = weights + B * (C * kv_bytes_per_token + state_bytes_per_sequence)
 *
 * Pure arithmetic over the descriptor (pipeline/arch.h): no files are read except a plan. Local. */
#ifndef TQ_MEMPLAN_H
#define TQ_MEMPLAN_H

#include <stdint.h>

#include "arch.h"    /* defines: tq_arch, tq_role */
#include "codec.h"   /* defines: tq_codec, tq_codec_bytes */
#include "dtype.h"   /* defines: tq_dtype */
#include "kvcache.h" /* defines: tq_kv_codec, tq_kv_vec_bytes */
#include "status.h"

/* How weights are stored. */
typedef enum {
    TQ_WSPEC_CODEC = 0, /* a tqpipe codec on every linear tensor (tq_role_is_linear); other tensors keep `other` */
    TQ_WSPEC_BPW,       /* a whole-model bits-per-weight figure applied to every parameter (llama.cpp style) */
    TQ_WSPEC_PLAN       /* per tensor from a plan file; unlisted tensors keep `other` */
} tq_wspec_kind;

typedef struct {
    tq_wspec_kind kind;
    char label[64];   /* what tables print: "tq4", "4.8944 bpw", "q4_k_m (4.8944 bpw)", "plan:RUN" */
    tq_codec codec;   /* TQ_WSPEC_CODEC */
    double bpw;       /* TQ_WSPEC_BPW */
    const char* plan; /* TQ_WSPEC_PLAN: path of the plan file */
} tq_wspec;

/* Parse a --weights value: a codec name (kernels/codec.h: tq4, tq4r4, bin1, rtn4, int8, bf16, ...), a
 * number of bits per weight ("4.8944"), or a llama.cpp type alias whose whole-model bpw was measured on
 * Llama-3.1-8B (q8_0 8.5008, q6_k 6.5633, q5_k_m 5.7036, q4_k_m 4.8944, q4_k_s 4.6672, iq4_xs 4.4597,
 * q2_k 3.1593, iq2_xxs 2.3824, iq1_s 2.0042). group 0 = codec default. @return TQ_OK or TQ_ERR_ARG. */
tq_status tq_wspec_parse(const char* s, int group, tq_wspec* out);

typedef struct {
    double total;                    /* bytes (double: bpw figures give fractional bytes) */
    double by_role[TQ_ROLE_COUNT];
    int64_t params;
    double bpw;                      /* 8 * total / params */
    int64_t n_coded, n_kept;         /* tensors stored with the codec / kept in `other` */
    int64_t n_plan_unlisted;         /* TQ_WSPEC_PLAN: descriptor tensors the plan does not name */
} tq_wbytes;

/* Weight bytes of the model under w; tensors not coded keep `other` (bf16 / fp16 / f32).
 * TQ_WSPEC_PLAN reads the plan file (see tq_memplan_read_plan). */
tq_status tq_memplan_weights(const tq_arch* a, const tq_wspec* w, tq_dtype other, tq_wbytes* out);

/* Plan file: the plan.txt of `tqpipe allocate` (pipeline/allocate.h), one tensor per line
 *     <tensor name> <codec label> [group]
 * '#' starts a comment; blank lines are skipped; the codec label is a kernels/codec.h name with an
 * optional ":g<G>" group suffix ("rtn4:g64"; default group 128), or a name plus a group column. The same
 * format is read from RUN/plan.txt when given a run directory. Unknown tensor names, unknown codecs and
 * duplicate lines are errors naming the file and line. codecs[i] receives the codec of a->tensors[i]
 * (kind TQ_CODEC_INVALID when the plan does not list it). */
tq_status tq_memplan_read_plan(const tq_arch* a, const char* path, tq_codec* codecs);

/* KV cache codec: a kernels/kvcache.h name (f32, fp16, bf16, int8, tq2, tq3, tq4, tq2.5, tq3.5, +qjl)
 * with its exact stored bytes per head vector, or a plain number of bits per element ("3.5": codes only,
 * no norms; what the seed simulation assumed). */
typedef struct {
    char label[32];
    int is_bits;
    double bits;
    tq_kv_codec codec;
} tq_kvspec;
tq_status tq_kvspec_parse(const char* s, tq_kvspec* out);

/* Bytes per token of K and V over every full-attention layer. */
double tq_memplan_kv_bytes_per_token(const tq_arch* a, const tq_kvspec* k);
/* Effective bits per KV element (8 * bytes / elements). */
double tq_memplan_kv_bits(const tq_arch* a, const tq_kvspec* k);
/* Recurrent state bytes per sequence (conv state + delta-rule state of every linear-attention layer). */
double tq_memplan_state_bytes(const tq_arch* a, tq_dtype state_dtype);

#endif
