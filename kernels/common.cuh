// common.cuh: helpers shared by every kernel in kernels/*.cu.
//
// NVRTC compiles each kernels/*.cu as one program with this file prepended (crates/attnscope-cuda/src/nvrtc.rs does the
// concatenation and adds a `#line 1 "<file>.cu"` directive so compiler errors name the right file and line).
// Nothing here needs a CUDA header: bf16/f16 are plain 16-bit storage types converted with inline PTX `cvt`
// (sm_80+), and infinities/limits are spelled out, so the kernels compile with NVRTC's built-ins alone.
//
// Conventions of every kernel:
//   * element types: `float` (f32), `bf16` and `f16` (16-bit storage, all arithmetic in f32);
//   * sizes and strides are `int` counts of elements; slot positions are `long long` (int64, as the CPU);
//   * every exported kernel is `extern "C"` with a dtype suffix (`_f32`, `_bf16`, `_f16`) so the host can
//     look it up by name after loading the PTX module.

#define ATTN_NEG_INF __int_as_float(0xff800000)
#define ATTN_POS_INF __int_as_float(0x7f800000)

/// bfloat16 storage (no arithmetic).
struct bf16 {
    unsigned short bits;
};
/// IEEE half storage (no arithmetic).
struct f16 {
    unsigned short bits;
};

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(bf16 v) { return __int_as_float(((unsigned int)v.bits) << 16); }
__device__ __forceinline__ float to_f32(f16 v) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
    return f;
}

/// Converts from f32 with round-to-nearest-even (the rounding of PyTorch's `.to(dtype)`).
template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ bf16 from_f32<bf16>(float v) {
    bf16 r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r.bits) : "f"(v));
    return r;
}
template <> __device__ __forceinline__ f16 from_f32<f16>(float v) {
    f16 r;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.bits) : "f"(v));
    return r;
}

/// Packs two f32 into one 32-bit register of two 16-bit values (low half = `lo`), as mma.sync wants them.
template <typename T> __device__ __forceinline__ unsigned int pack2(float lo, float hi) {
    return (unsigned int)from_f32<T>(lo).bits | ((unsigned int)from_f32<T>(hi).bits << 16);
}

/// d = a·b + c for one m16n8k16 tile; a: 4 regs (16×16, row), b: 2 regs (16×8, col), c/d: 4 f32.
template <typename T> __device__ __forceinline__ void mma16816(float* d, const unsigned int* a, unsigned int b0,
                                                               unsigned int b1);
template <> __device__ __forceinline__ void mma16816<bf16>(float* d, const unsigned int* a, unsigned int b0,
                                                           unsigned int b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <> __device__ __forceinline__ void mma16816<f16>(float* d, const unsigned int* a, unsigned int b0,
                                                          unsigned int b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ unsigned int pack_bits(unsigned short lo, unsigned short hi) {
    return (unsigned int)lo | ((unsigned int)hi << 16);
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/// Sum over the whole block (blockDim.x a multiple of 32, at most 1024). Every thread gets the result.
/// `scratch` is 32 floats of shared memory; the call synchronises the block twice.
__device__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float total = 0.0f;
    for (int w = 0; w < n_warps; ++w) total += scratch[w];
    return total;
}

/// Visibility of key slot `k` to query slot `q`: the rule of `AttentionMask::allows` (crates/attnscope-core/src/slots.rs).
///   k > q                                  → hidden (causal)
///   window > 0 and q − k >= window         → hidden (sliding window, by slot index)
///   isolated, k != q, group[q] >= 0 and group[k] == group[q] → hidden (parallel tokens of one group)
/// `group_q`/`group_k` are the slots' int32 group ids (−1 = none); `isolated` is 0 or 1; `window` 0 = none.
__device__ __forceinline__ bool slot_visible_g(int q, int k, int group_q, int group_k, int isolated, int window) {
    if (k > q) return false;
    if (window > 0 && q - k >= window) return false;
    if (isolated && k != q && group_q >= 0 && group_k == group_q) return false;
    return true;
}
/// The same rule reading the group ids from `groups` (one int32 per slot).
__device__ __forceinline__ bool slot_visible(int q, int k, const int* groups, int isolated, int window) {
    if (k > q) return false;
    return slot_visible_g(q, k, groups[q], groups[k], isolated, window);
}

/// Relative-distance bucket, exactly `distance_bucket` of crates/attnscope-core/src/slots.rs:
/// 0 for d < 0, 1 for d = 0, 1 + b for d in [2^(b−1), 2^b).
#define ATTN_DISTANCE_BUCKETS 65
__device__ __forceinline__ int distance_bucket(long long d) {
    if (d < 0) return 0;
    if (d == 0) return 1;
    return 1 + (64 - __clzll(d));
}

// ---------------------------------------------------------------------------------------------------------
// The parameter block of every attention kernel, passed by value: the twin of `AttnParams` in
// crates/attnscope-cuda/src/params.rs (flash-attention's `Flash_fwd_params` is the model). Pointers are device addresses
// (null = an output not computed), counts and strides are elements; fields a kernel does not read are 0.
//
// Layout check: the NVRTC compile step prepends ATTN_PARAMS_SIZE and ATTN_PARAMS_OFF_<field>, generated
// from the Rust struct's size_of/offset_of. NVRTC has no offsetof, so the fields are listed once (X-macro
// below), the struct is declared from the list, and each field's offset is computed from the list with the
// C layout rule (align each field to its alignment, in declaration order); the static_asserts compare those
// and the compiler's real sizeof with the Rust numbers, so a renamed, reordered, retyped, added or removed
// field on either side fails the compile.
#define ATTN_PARAMS_FIELDS(X)                                                                                 \
    X(const void*, q)              /* [n_new, q_stride] T, already rotated */                                 \
    X(const void*, k)              /* [n_keys, kv_stride] T */                                                \
    X(const void*, v)              /* [n_keys, kv_stride] T */                                                \
    X(void*, o)                    /* [n_new, o_stride] T */                                                  \
    X(float*, lse)                 /* [n_heads, n_new], always written */                                     \
    X(float*, entropy)             /* [n_heads, n_new] or null */                                             \
    X(float*, max_weight)          /* [n_heads, n_new] or null */                                             \
    X(unsigned int*, argmax)       /* [n_heads, n_new] or null */                                             \
    X(const int*, groups)          /* [n_keys] group per slot, -1 = none */                                   \
    X(const long long*, positions) /* [n_keys] position per slot (second pass) */                             \
    X(float*, part_stat)           /* decode partials [n_heads, n_splits, n_new, 4] */                        \
    X(int*, part_arg)              /* [n_heads, n_splits, n_new] */                                           \
    X(float*, part_o)              /* [n_heads, n_splits, n_new, head_dim] */                                 \
    X(const int*, heads)           /* second pass: [n_sel] query heads */                                     \
    X(void*, weights)              /* second pass: f32 or f16 weights, or null */                             \
    X(float*, sink)                /* [n_sel, n_new] or null */                                               \
    X(float*, prev)                                                                                           \
    X(float*, self_mass)                                                                                      \
    X(float*, group_mass)                                                                                     \
    X(double*, received)           /* [n_sel, received_stride] or null */                                     \
    X(double*, distance)           /* [n_sel, ATTN_DISTANCE_BUCKETS] or null */                               \
    X(double*, recv_part)          /* second pass: [n_sel, row_groups, n_keys] received partials, or null */  \
    X(long long, w_head_stride)                                                                               \
    X(long long, w_row_stride)                                                                                \
    X(int, q_stride)                                                                                          \
    X(int, kv_stride)                                                                                         \
    X(int, o_stride)                                                                                          \
    X(int, isolated)                                                                                          \
    X(int, window)                                                                                            \
    X(int, q_start)                                                                                           \
    X(int, n_new)                                                                                             \
    X(int, n_heads)                                                                                           \
    X(int, n_kv_heads)                                                                                        \
    X(int, head_dim)                                                                                          \
    X(float, scale)                                                                                           \
    X(int, split_len)              /* keys per split (decode) or per z-block (second pass) */                 \
    X(int, n_splits)               /* decode combine */                                                       \
    X(int, n_sel)                  /* second pass */                                                          \
    X(int, received_stride)                                                                                   \
    X(int, row_groups)             /* second pass: gridDim.x of attn_probs (the partials' middle axis) */

#define ATTN_PARAMS_DECLARE(T, f) T f;
struct AttnParams {
    ATTN_PARAMS_FIELDS(ATTN_PARAMS_DECLARE)
};

#ifndef ATTN_PARAMS_SIZE
#error "ATTN_PARAMS_SIZE is not defined: compile through attnscope::cuda::compile_kernel"
#endif
#define ATTN_PARAMS_INDEX(T, f) attn_params_index_##f,
#define ATTN_PARAMS_SIZEOF(T, f) sizeof(T),
#define ATTN_PARAMS_ALIGNOF(T, f) alignof(T),
enum AttnParamsIndex { ATTN_PARAMS_FIELDS(ATTN_PARAMS_INDEX) attn_params_count };
constexpr unsigned long long attn_params_sizes[] = {ATTN_PARAMS_FIELDS(ATTN_PARAMS_SIZEOF)};
constexpr unsigned long long attn_params_aligns[] = {ATTN_PARAMS_FIELDS(ATTN_PARAMS_ALIGNOF)};
/// Offset of field `i` by the C layout rule.
__device__ constexpr unsigned long long attn_params_offset(int i) {
    unsigned long long off = 0;
    for (int j = 0;; ++j) {
        off = (off + attn_params_aligns[j] - 1) / attn_params_aligns[j] * attn_params_aligns[j];
        if (j == i) return off;
        off += attn_params_sizes[j];
    }
}
static_assert(sizeof(AttnParams) == ATTN_PARAMS_SIZE, "AttnParams: size differs from crates/attnscope-cuda/src/params.rs");
static_assert(attn_params_offset(attn_params_count - 1) + attn_params_sizes[attn_params_count - 1] ==
                  ATTN_PARAMS_SIZE,
              "AttnParams: the last field does not end the struct");
#define ATTN_PARAMS_CHECK(T, f)                                                                               \
    static_assert(attn_params_offset(attn_params_index_##f) == ATTN_PARAMS_OFF_##f,                           \
                  "AttnParams." #f ": offset differs from crates/attnscope-cuda/src/params.rs");
ATTN_PARAMS_FIELDS(ATTN_PARAMS_CHECK)
