// rope.cu: rotary position embeddings at explicit per-slot positions (rotate-half layout, partial rotary).
// CPU twin: `Rope::apply` / `Rope::cos_sin` in crates/attnscope-core/src/model/rope.rs.
//
// The inverse-frequency table is computed on the host by `Rope::new` (default, linear and llama3 scaling all
// happen there) and passed in, so this kernel has no scaling logic. As on the CPU, the angle is
// f32(inv_freq · f32(position)) and its cos/sin are evaluated in f64 and rounded to f32.
//
// rope_<T>(x, positions, inv_freq, t, n_heads, head_dim, rotary_dim, row_stride)
//   x [t rows, row_stride] T updated in place; head h of row i starts at x + i·row_stride + h·head_dim
//     (row_stride = n_heads·head_dim for a plain q or k tensor; larger to rotate inside a fused qkv buffer);
//   positions [t] int64; inv_freq [rotary_dim / 2] f32.
//   For i < rotary_dim/2: (x1, x2) = (x[i], x[i + half]) → (x1·cos − x2·sin, x2·cos + x1·sin);
//   entries rotary_dim..head_dim pass through unchanged.
//   Launch: grid (t, n_heads), block 32..1024 threads (64 is enough); threads stride over the rotary pairs.

template <typename T>
__device__ void rope(T* x, const long long* positions, const float* inv_freq, int t, int n_heads, int head_dim,
                     int rotary_dim, int row_stride) {
    const int row = blockIdx.x, h = blockIdx.y;
    if (row >= t || h >= n_heads) return;
    const int half = rotary_dim / 2;
    const float p = (float)positions[row];
    T* head = x + (long long)row * row_stride + (long long)h * head_dim;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        const float angle = inv_freq[i] * p;
        double s, c;
        sincos((double)angle, &s, &c);
        const float cs = (float)c, sn = (float)s;
        const float x1 = to_f32(head[i]), x2 = to_f32(head[i + half]);
        head[i] = from_f32<T>(x1 * cs - x2 * sn);
        head[i + half] = from_f32<T>(x2 * cs + x1 * sn);
    }
}

#define ROPE_KERNEL(T, SUFFIX)                                                                                \
    extern "C" __global__ void rope_##SUFFIX(T* x, const long long* positions, const float* inv_freq, int t,  \
                                             int n_heads, int head_dim, int rotary_dim, int row_stride) {     \
        rope<T>(x, positions, inv_freq, t, n_heads, head_dim, rotary_dim, row_stride);                        \
    }

ROPE_KERNEL(float, f32)
ROPE_KERNEL(bf16, bf16)
ROPE_KERNEL(f16, f16)
