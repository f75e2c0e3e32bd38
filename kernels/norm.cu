// norm.cu: RMSNorm and LayerNorm over the last dimension.
// CPU twin: `norm_row` in crates/attnscope-core/src/model/ops.rs (f32 arithmetic, transformers' formulas):
//   RMSNorm:   out = w · (x / sqrt(mean(x²) + eps))
//   LayerNorm: out = (x − mean) / sqrt(var + eps) · w + b      (biased variance, two passes as the CPU)
//
// rmsnorm_<T>(x, w, out, rows, dim, eps)
// layernorm_<T>(x, w, b, out, rows, dim, eps)        b may be null (no bias)
//   x, out [rows, dim] T (row-major, may alias), w and b [dim] T. Statistics are accumulated in f32.
//   Also serves the per-head q/k RMSNorm of Qwen3: rows = tokens · heads, dim = head_dim.
//   Launch: grid (rows), block a multiple of 32 up to 1024 (256 is a good default); static shared memory
//   of 32 floats.

template <typename T>
__device__ void rmsnorm(const T* x, const T* w, T* out, int rows, int dim, float eps) {
    __shared__ float scratch[32];
    const int r = blockIdx.x;
    if (r >= rows) return;
    const T* xr = x + (long long)r * dim;
    float ss = 0.0f;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) {
        const float v = to_f32(xr[c]);
        ss += v * v;
    }
    const float ms = block_sum(ss, scratch) / (float)dim;
    const float inv = 1.0f / sqrtf(ms + eps);
    T* o = out + (long long)r * dim;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) o[c] = from_f32<T>(to_f32(w[c]) * (to_f32(xr[c]) * inv));
}

template <typename T>
__device__ void layernorm(const T* x, const T* w, const T* b, T* out, int rows, int dim, float eps) {
    __shared__ float scratch[32];
    const int r = blockIdx.x;
    if (r >= rows) return;
    const T* xr = x + (long long)r * dim;
    float s = 0.0f;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) s += to_f32(xr[c]);
    const float mean = block_sum(s, scratch) / (float)dim;
    float sq = 0.0f;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) {
        const float d = to_f32(xr[c]) - mean;
        sq += d * d;
    }
    const float var = block_sum(sq, scratch) / (float)dim;
    const float inv = 1.0f / sqrtf(var + eps);
    T* o = out + (long long)r * dim;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) {
        const float bias = b ? to_f32(b[c]) : 0.0f;
        o[c] = from_f32<T>((to_f32(xr[c]) - mean) * inv * to_f32(w[c]) + bias);
    }
}

#define NORM_KERNELS(T, SUFFIX)                                                                               \
    extern "C" __global__ void rmsnorm_##SUFFIX(const T* x, const T* w, T* out, int rows, int dim, float eps) { \
        rmsnorm<T>(x, w, out, rows, dim, eps);                                                                \
    }                                                                                                         \
    extern "C" __global__ void layernorm_##SUFFIX(const T* x, const T* w, const T* b, T* out, int rows, int dim, \
                                                  float eps) {                                                \
        layernorm<T>(x, w, b, out, rows, dim, eps);                                                           \
    }

NORM_KERNELS(float, f32)
NORM_KERNELS(bf16, bf16)
NORM_KERNELS(f16, f16)
