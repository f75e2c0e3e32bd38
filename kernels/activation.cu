// activation.cu: MLP activations, elementwise.
// CPU twin: `activation` / `activate` in crates/attnscope-core/src/model/ops.rs and
// `CpuBackend::activate_gated` in crates/attnscope-core/src/model/cpu.rs (`up *= act(gate)`):
//   silu(x)      = x / (1 + exp(−x))                                  (f32)
//   gelu_erf(x)  = 0.5·x·(1 + erf(x/√2))                               (f64, with the CPU's erf fit, |err| < 1.2e-7)
//   gelu_tanh(x) = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))          (f32, tanh y = 1 − 2/(1 + e^{2y}))
//   relu(x)      = max(x, 0)
//
// act_<name>_<T>(x, n)                in place: x[i] = act(x[i])
// act_gate_<name>_<T>(gate, up, n)    gated MLP: up[i] = up[i] · act(gate[i])   (silu_gate for Llama-family)
//   x, gate, up [n] T (flat; any shape). <name> ∈ {silu, gelu_erf, gelu_tanh, relu}.
//   Launch: 1-D grid-stride loop, e.g. grid (min(ceil(n/256), 65535)), block 256.

/// Error function, Numerical Recipes' erfc Chebyshev fit in f64: the same arithmetic as `erf` in ops.rs.
__device__ double erf_nr(double x) {
    const double z = fabs(x);
    const double t = 1.0 / (1.0 + 0.5 * z);
    const double poly =
        -z * z - 1.26551223 +
        t * (1.00002368 +
             t * (0.37409196 +
                  t * (0.09678418 +
                       t * (-0.18628806 +
                            t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    const double erfc = t * exp(poly);
    return x >= 0.0 ? 1.0 - erfc : erfc - 1.0;
}

__device__ __forceinline__ float act_silu(float x) { return x / (1.0f + expf(-x)); }
__device__ __forceinline__ float act_gelu_erf(float x) {
    const double xd = (double)x;
    return (float)(0.5 * xd * (1.0 + erf_nr(xd / 1.4142135623730951)));
}
__device__ __forceinline__ float act_gelu_tanh(float x) {
    // f32 throughout, as transformers' gelu_new and the CPU twin: tanh(y) = 1 − 2 / (1 + e^{2y}).
    const float inner = 0.7978846f * (x + 0.044715f * x * x * x);
    const float t = 1.0f - 2.0f / (1.0f + expf(2.0f * inner));
    return 0.5f * x * (1.0f + t);
}
__device__ __forceinline__ float act_relu(float x) { return fmaxf(x, 0.0f); }

#define ACT_KERNELS(NAME, T, SUFFIX)                                                                          \
    extern "C" __global__ void act_##NAME##_##SUFFIX(T* x, long long n) {                                     \
        for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;                           \
             i += (long long)gridDim.x * blockDim.x)                                                          \
            x[i] = from_f32<T>(act_##NAME(to_f32(x[i])));                                                     \
    }                                                                                                         \
    extern "C" __global__ void act_gate_##NAME##_##SUFFIX(const T* gate, T* up, long long n) {                \
        for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;                           \
             i += (long long)gridDim.x * blockDim.x)                                                          \
            up[i] = from_f32<T>(to_f32(up[i]) * act_##NAME(to_f32(gate[i])));                                 \
    }

#define ACT_ALL(T, SUFFIX)                                                                                    \
    ACT_KERNELS(silu, T, SUFFIX)                                                                              \
    ACT_KERNELS(gelu_erf, T, SUFFIX)                                                                          \
    ACT_KERNELS(gelu_tanh, T, SUFFIX)                                                                         \
    ACT_KERNELS(relu, T, SUFFIX)

ACT_ALL(float, f32)
ACT_ALL(bf16, bf16)
ACT_ALL(f16, f16)
