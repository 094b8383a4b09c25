/* model_gpu_stub.c — the GPU forward pass entry points (pipeline/model_gpu.h) for builds without CUDA:
 * no GPU is ever present and every call answers TQ_ERR_NOGPU, so callers choose the CPU path
 * (pipeline/model.h). With TQ_HAVE_CUDA, pipeline/model_gpu.c defines them and this file is empty. */
#include "model_gpu.h"

#ifndef TQ_HAVE_CUDA

static tq_status no_gpu(void)
{
    return tq_fail(TQ_ERR_NOGPU, "this build has no CUDA: run with --device cpu (or rebuild with TQ_CUDA=ON on a GPU node)");
}

int tq_gmodel_gpu_present(void)
{
    return 0;
}

int tq_gmodel_select_device(int local_rank)
{
    (void)local_rank;
    return -1;
}

tq_status tq_gmodel_load(tq_wsource* src, int l0, int l1, const tq_gmodel_opts* o, tq_gmodel** out)
{
    (void)src;
    (void)l0;
    (void)l1;
    (void)o;
    *out = NULL;
    return no_gpu();
}

void tq_gmodel_free(tq_gmodel** pm)
{
    if (pm) *pm = NULL;
}

int tq_gmodel_hidden(const tq_gmodel* m)
{
    (void)m;
    return 0;
}

int tq_gmodel_vocab(const tq_gmodel* m)
{
    (void)m;
    return 0;
}

size_t tq_gmodel_weight_bytes(const tq_gmodel* m)
{
    (void)m;
    return 0;
}

size_t tq_gmodel_scratch_bytes(const tq_gmodel* m)
{
    (void)m;
    return 0;
}

int tq_gmodel_packed_tensors(const tq_gmodel* m)
{
    (void)m;
    return 0;
}

int tq_gmodel_device(const tq_gmodel* m)
{
    (void)m;
    return -1;
}

void* tq_gmodel_stream(const tq_gmodel* m)
{
    (void)m;
    return NULL;
}

tq_status tq_gmodel_kv_create(const tq_gmodel* m, const tq_kv_codec* kc, const tq_kv_codec* vc, int max_tokens,
                              uint64_t seed, tq_gkv** out)
{
    (void)m;
    (void)kc;
    (void)vc;
    (void)max_tokens;
    (void)seed;
    *out = NULL;
    return no_gpu();
}

void tq_gkv_free(tq_gkv** pk)
{
    if (pk) *pk = NULL;
}

void tq_gkv_reset(tq_gkv* k)
{
    (void)k;
}

size_t tq_gkv_bytes_per_token(const tq_gkv* k)
{
    (void)k;
    return 0;
}

size_t tq_gkv_device_bytes_per_token(const tq_gkv* k)
{
    (void)k;
    return 0;
}

tq_status tq_gkv_bench_fill(tq_gkv* k, int n)
{
    (void)k;
    (void)n;
    return no_gpu();
}

tq_status tq_gmodel_embed(tq_gmodel* m, const int* tokens, int T)
{
    (void)m;
    (void)tokens;
    (void)T;
    return no_gpu();
}

tq_status tq_gmodel_layers(tq_gmodel* m, tq_gkv* kv, int T, int pos0)
{
    (void)m;
    (void)kv;
    (void)T;
    (void)pos0;
    return no_gpu();
}

tq_status tq_gmodel_head(tq_gmodel* m, int T, float* logits)
{
    (void)m;
    (void)T;
    (void)logits;
    return no_gpu();
}

tq_status tq_gmodel_forward(tq_gmodel* m, tq_gkv* kv, const int* tokens, int T, int pos0, float* logits)
{
    (void)m;
    (void)kv;
    (void)tokens;
    (void)T;
    (void)pos0;
    (void)logits;
    return no_gpu();
}

tq_status tq_gmodel_reserve(tq_gmodel* m, int T)
{
    (void)m;
    (void)T;
    return no_gpu();
}

float* tq_gmodel_x_dev(tq_gmodel* m)
{
    (void)m;
    return NULL;
}

tq_status tq_gmodel_x_get(tq_gmodel* m, float* host, int T)
{
    (void)m;
    (void)host;
    (void)T;
    return no_gpu();
}

tq_status tq_gmodel_x_set(tq_gmodel* m, const float* host, int T)
{
    (void)m;
    (void)host;
    (void)T;
    return no_gpu();
}

tq_status tq_gmodel_sync(tq_gmodel* m)
{
    (void)m;
    return no_gpu();
}

#endif
