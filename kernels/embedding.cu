// embedding.cu: token-embedding gather and learned-position add.
// CPU twin: `CpuBackend::embed` in crates/attnscope-core/src/model/cpu.rs (copy of `embed[token]`,
// then `+ pos_embed[position]` for GPT-2-style learned positions).
//
// embedding_gather_<T>(table, ids, out, n, dim, vocab)
//   table [vocab, dim] T (row-major), ids [n] uint32, out [n, dim] T.
//   out[i, :] = table[ids[i], :]; an id >= vocab writes zeros (the host validates ids before launching).
//   Launch: grid (n), block 128..1024 threads (any multiple of 32); threads stride over dim.
//
// position_add_<T>(table, positions, x, n, dim, max_positions)
//   table [max_positions, dim] T, positions [n] int64, x [n, dim] T updated in place.
//   x[i, :] += table[positions[i], :] (f32 add, rounded once to T); out-of-range positions add nothing.
//   Launch: grid (n), block 128..1024 threads.

template <typename T>
__device__ void embedding_gather(const T* table, const unsigned int* ids, T* out, int n, int dim, int vocab) {
    const int i = blockIdx.x;
    if (i >= n) return;
    const unsigned int id = ids[i];
    T* dst = out + (long long)i * dim;
    if (id >= (unsigned int)vocab) {
        for (int c = threadIdx.x; c < dim; c += blockDim.x) dst[c] = from_f32<T>(0.0f);
        return;
    }
    const T* src = table + (long long)id * dim;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) dst[c] = src[c];
}

template <typename T>
__device__ void position_add(const T* table, const long long* positions, T* x, int n, int dim, int max_positions) {
    const int i = blockIdx.x;
    if (i >= n) return;
    const long long p = positions[i];
    if (p < 0 || p >= max_positions) return;
    const T* src = table + p * dim;
    T* dst = x + (long long)i * dim;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) dst[c] = from_f32<T>(to_f32(dst[c]) + to_f32(src[c]));
}

#define EMBEDDING_KERNELS(T, SUFFIX)                                                                          \
    extern "C" __global__ void embedding_gather_##SUFFIX(const T* table, const unsigned int* ids, T* out, int n, \
                                                         int dim, int vocab) {                                \
        embedding_gather<T>(table, ids, out, n, dim, vocab);                                                  \
    }                                                                                                         \
    extern "C" __global__ void position_add_##SUFFIX(const T* table, const long long* positions, T* x, int n,  \
                                                     int dim, int max_positions) {                            \
        position_add<T>(table, positions, x, n, dim, max_positions);                                          \
    }

EMBEDDING_KERNELS(float, f32)
EMBEDDING_KERNELS(bf16, bf16)
EMBEDDING_KERNELS(f16, f16)
