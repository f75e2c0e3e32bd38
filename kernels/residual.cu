// residual.cu: residual additions and bias adds, elementwise with f32 arithmetic.
// CPU twin: `add_in_place` in crates/attnscope-core/src/model/ops.rs (residual stream) and the bias add of `project`.
//
// residual_add_<T>(x, y, n)            x[i] += y[i]
// residual_add2_<T>(x, a, b, n)        x[i] += a[i] + b[i]     (GPT-NeoX parallel residual: attn + mlp;
//                                                               the sum a + b is formed first, as the CPU does)
// bias_add_<T>(x, bias, rows, dim)     x[r, c] += bias[c]
//   All tensors T, flat or [rows, dim] row-major. Launch: 1-D grid-stride loop, e.g. grid
//   (min(ceil(n/256), 65535)), block 256.

#define RESIDUAL_KERNELS(T, SUFFIX)                                                                           \
    extern "C" __global__ void residual_add_##SUFFIX(T* x, const T* y, long long n) {                         \
        for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;                           \
             i += (long long)gridDim.x * blockDim.x)                                                          \
            x[i] = from_f32<T>(to_f32(x[i]) + to_f32(y[i]));                                                  \
    }                                                                                                         \
    extern "C" __global__ void residual_add2_##SUFFIX(T* x, const T* a, const T* b, long long n) {            \
        for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;                           \
             i += (long long)gridDim.x * blockDim.x)                                                          \
            x[i] = from_f32<T>(to_f32(x[i]) + (to_f32(a[i]) + to_f32(b[i])));                                 \
    }                                                                                                         \
    extern "C" __global__ void bias_add_##SUFFIX(T* x, const T* bias, long long rows, int dim) {              \
        const long long n = rows * dim;                                                                       \
        for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;                           \
             i += (long long)gridDim.x * blockDim.x)                                                          \
            x[i] = from_f32<T>(to_f32(x[i]) + to_f32(bias[i % dim]));                                         \
    }

RESIDUAL_KERNELS(float, f32)
RESIDUAL_KERNELS(bf16, bf16)
RESIDUAL_KERNELS(f16, f16)
