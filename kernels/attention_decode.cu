// attention_decode.cu: decode attention for one or a few query rows (a generated token, or a parallel set
// of tokens) against a long KV cache, split over the cache length (split-K / flash-decoding).
// CPU twin: `attention` in crates/attnscope-core/src/model/attention.rs with n_new small (the same visibility rule, lse, Σp·s) and
// `row_stats` in crates/attnscope-core/src/capture/recorder.rs for entropy / max_weight / argmax.
//
// Query row i (0 <= i < n_q <= 8) is slot q_start + i; keys are slots 0..q_start+n_q−1 of the cache.
// Layouts of q, k, v, o, groups as in attention_prefill.cu. GQA: query head h reads kv head h / (n_heads / n_kv_heads).
//
// 1. attn_decode_partial_<T>(q, q_stride, k, v, kv_stride, groups, isolated, window, q_start, n_q, n_heads,
//                            n_kv_heads, head_dim, scale, split_len, part_stat, part_arg, part_o)
//    Block (split z, head h) takes keys [z·split_len, min((z+1)·split_len, n_keys)) and writes per row i:
//      part_stat [n_heads, n_splits, n_q, 4] f32: m (max score, −inf if nothing visible), l = Σ exp(s − m),
//                a = Σ exp(s − m)·s, and the best score (= m);
//      part_arg  [n_heads, n_splits, n_q] int32: first key slot attaining m (−1 if none);
//      part_o    [n_heads, n_splits, n_q, head_dim] f32: Σ exp(s − m)·v.
//    Launch: grid (n_splits = ceil(n_keys / split_len), n_heads), block 128 (4 warps: a warp scores one key
//    at a time, lanes over head_dim; then threads own output dims). Dynamic shared memory
//    (n_q·head_dim + n_q·split_len)·4 bytes: split_len 256, n_q 8, hd 128 → 12 KiB. head_dim <= 256.
//
// 2. attn_decode_combine_<T>(part_stat, part_arg, part_o, n_splits, n_q, n_heads, head_dim, o, o_stride, lse,
//                            entropy, max_weight, argmax)
//    Merges the splits of row i, head h: M = max m_z, L = Σ l_z·e^(m_z − M), A = Σ a_z·e^(m_z − M),
//    O = Σ o_z·e^(m_z − M) / L, lse = M + ln L, entropy = lse − A/L, max_weight = e^(M − lse), argmax = the
//    lowest slot attaining M. lse/entropy/max_weight/argmax are [n_heads, n_q] (entropy, max_weight and
//    argmax may be null). Launch: grid (n_heads, n_q), block 128.
//
// 3. Probability rows and the capture reductions (exact weights, sink/prev/self/group mass, received,
//    distance buckets) for these rows come from attention_probs.cu with n_new = n_q and the lse written by
//    step 2, launched with a key_split (e.g. 1024) so a long cache is spread over many blocks.
//
// l and a are accumulated in f64 inside a block (f32 scores), as the CPU accumulates them in f64.

#define DECODE_MAX_Q 8
#define DECODE_THREADS 128
#define DECODE_MAX_HD 256

/// Block-wide sum of a double (blockDim.x = DECODE_THREADS). `scratch` holds 4 doubles; two barriers.
__device__ double block_sum_d(double v, double* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    double total = 0.0;
    for (int w = 0; w < DECODE_THREADS / 32; ++w) total += scratch[w];
    return total;
}

template <typename T>
__device__ void attn_decode_partial(const T* __restrict__ q, int q_stride, const T* __restrict__ k,
                                    const T* __restrict__ v, int kv_stride, const int* __restrict__ groups,
                                    int isolated, int window, int q_start, int n_q, int n_heads, int n_kv_heads,
                                    int head_dim, float scale, int split_len, float* __restrict__ part_stat,
                                    int* __restrict__ part_arg, float* __restrict__ part_o) {
    extern __shared__ float smem[];
    __shared__ double scratch[DECODE_THREADS / 32];
    __shared__ float fscratch[DECODE_THREADS / 32];
    __shared__ int iscratch[DECODE_THREADS / 32];
    const int hd = head_dim;
    float* Qs = smem;              // [n_q][hd]
    float* Sc = smem + n_q * hd;   // [n_q][split_len]: scores, then exp(s − m)

    const int z = blockIdx.x, h = blockIdx.y, n_splits = gridDim.x;
    const int kvh = h / (n_heads / n_kv_heads);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int n_keys = q_start + n_q;
    const int key0 = z * split_len;
    const int len = max(0, min(split_len, n_keys - key0));
    if (n_q > DECODE_MAX_Q) return;  // the host checks this; never index past the per-row registers

    for (int idx = threadIdx.x; idx < n_q * hd; idx += blockDim.x) {
        const int r = idx / hd, d = idx - r * hd;
        Qs[idx] = to_f32(q[(long long)r * q_stride + (long long)h * hd + d]);
    }
    __syncthreads();

    // Scores: warp w takes keys w, w+4, …; lanes split the head dimension.
    for (int j = warp; j < len; j += DECODE_THREADS / 32) {
        const int key = key0 + j;
        const T* krow = k + (long long)key * kv_stride + (long long)kvh * hd;
        float kreg[DECODE_MAX_HD / 32];
#pragma unroll
        for (int i = 0; i < DECODE_MAX_HD / 32; ++i) {
            const int d = lane + 32 * i;
            kreg[i] = d < hd ? to_f32(krow[d]) : 0.0f;
        }
        const int group_k = groups[key];
        for (int r = 0; r < n_q; ++r) {
            float dot = 0.0f;
#pragma unroll
            for (int i = 0; i < DECODE_MAX_HD / 32; ++i) {
                const int d = lane + 32 * i;
                if (d < hd) dot += Qs[r * hd + d] * kreg[i];
            }
            dot = warp_sum(dot);
            const int qslot = q_start + r;
            if (lane == 0)
                Sc[r * split_len + j] =
                    slot_visible_g(qslot, key, groups[qslot], group_k, isolated, window) ? scale * dot : ATTN_NEG_INF;
        }
    }
    __syncthreads();

    // Per-row max, first argmax, then exp(s − m) in place with Σ and Σ e·s in f64.
    for (int r = 0; r < n_q; ++r) {
        float best = ATTN_NEG_INF;
        int best_j = 0x7fffffff;
        for (int j = threadIdx.x; j < len; j += blockDim.x) {
            const float s = Sc[r * split_len + j];
            if (s > best) {  // j increases per thread, so strict > keeps the first
                best = s;
                best_j = j;
            }
        }
        for (int o = 16; o > 0; o >>= 1) {
            const float ob = __shfl_xor_sync(0xffffffffu, best, o);
            const int oj = __shfl_xor_sync(0xffffffffu, best_j, o);
            if (ob > best || (ob == best && oj < best_j)) {
                best = ob;
                best_j = oj;
            }
        }
        __syncthreads();
        if (lane == 0) {
            fscratch[warp] = best;
            iscratch[warp] = best_j;
        }
        __syncthreads();
        best = fscratch[0];
        best_j = iscratch[0];
        for (int w = 1; w < DECODE_THREADS / 32; ++w)
            if (fscratch[w] > best || (fscratch[w] == best && iscratch[w] < best_j)) {
                best = fscratch[w];
                best_j = iscratch[w];
            }
        double l = 0.0, a = 0.0;
        for (int j = threadIdx.x; j < len; j += blockDim.x) {
            const float s = Sc[r * split_len + j];
            const float e = s == ATTN_NEG_INF ? 0.0f : expf(s - best);
            l += (double)e;
            a += s == ATTN_NEG_INF ? 0.0 : (double)e * (double)s;
            Sc[r * split_len + j] = e;
        }
        l = block_sum_d(l, scratch);
        a = block_sum_d(a, scratch);
        if (threadIdx.x == 0) {
            float* st = part_stat + (((long long)h * n_splits + z) * n_q + r) * 4;
            st[0] = best;
            st[1] = (float)l;
            st[2] = (float)a;
            st[3] = best;
            part_arg[((long long)h * n_splits + z) * n_q + r] = best == ATTN_NEG_INF ? -1 : key0 + best_j;
        }
    }
    __syncthreads();

    // Partial outputs: thread owns dims tid and tid + 128.
    float acc[DECODE_MAX_Q][DECODE_MAX_HD / DECODE_THREADS];
#pragma unroll
    for (int r = 0; r < DECODE_MAX_Q; ++r)
#pragma unroll
        for (int i = 0; i < DECODE_MAX_HD / DECODE_THREADS; ++i) acc[r][i] = 0.0f;
    for (int j = 0; j < len; ++j) {
        const T* vrow = v + (long long)(key0 + j) * kv_stride + (long long)kvh * hd;
#pragma unroll
        for (int i = 0; i < DECODE_MAX_HD / DECODE_THREADS; ++i) {
            const int d = threadIdx.x + DECODE_THREADS * i;
            if (d >= hd) break;
            const float vd = to_f32(vrow[d]);
#pragma unroll
            for (int r = 0; r < DECODE_MAX_Q; ++r)
                if (r < n_q) acc[r][i] += Sc[r * split_len + j] * vd;
        }
    }
    for (int r = 0; r < n_q; ++r)
#pragma unroll
        for (int i = 0; i < DECODE_MAX_HD / DECODE_THREADS; ++i) {
            const int d = threadIdx.x + DECODE_THREADS * i;
            if (d < hd) part_o[(((long long)h * n_splits + z) * n_q + r) * hd + d] = acc[r][i];
        }
}

template <typename T>
__device__ void attn_decode_combine(const float* __restrict__ part_stat, const int* __restrict__ part_arg,
                                    const float* __restrict__ part_o, int n_splits, int n_q, int n_heads,
                                    int head_dim, T* __restrict__ o, int o_stride, float* __restrict__ lse_out,
                                    float* __restrict__ entropy_out, float* __restrict__ max_weight_out,
                                    unsigned int* __restrict__ argmax_out) {
    const int h = blockIdx.x, r = blockIdx.y;
    if (h >= n_heads || r >= n_q) return;
    const int hd = head_dim;
    // Every thread reads the (few) split statistics; no shared memory needed.
    float M = ATTN_NEG_INF;
    int arg = 0x7fffffff;
    for (int z = 0; z < n_splits; ++z) {
        const float* st = part_stat + (((long long)h * n_splits + z) * n_q + r) * 4;
        const int az = part_arg[((long long)h * n_splits + z) * n_q + r];
        if (st[0] > M || (st[0] == M && az >= 0 && az < arg)) {
            M = st[0];
            arg = az;
        }
    }
    double L = 0.0, A = 0.0;
    for (int z = 0; z < n_splits; ++z) {
        const float* st = part_stat + (((long long)h * n_splits + z) * n_q + r) * 4;
        if (st[0] == ATTN_NEG_INF) continue;
        const double w = exp((double)(st[0] - M));
        L += (double)st[1] * w;
        A += (double)st[2] * w;
    }
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        double acc = 0.0;
        for (int z = 0; z < n_splits; ++z) {
            const float mz = part_stat[(((long long)h * n_splits + z) * n_q + r) * 4];
            if (mz == ATTN_NEG_INF) continue;
            acc += (double)part_o[(((long long)h * n_splits + z) * n_q + r) * hd + d] * exp((double)(mz - M));
        }
        o[(long long)r * o_stride + (long long)h * hd + d] = from_f32<T>((float)(acc / L));
    }
    if (threadIdx.x == 0) {
        // The query slot always sees itself, so L > 0.
        const float lse = M + (float)log(L);
        const long long si = (long long)h * n_q + r;
        lse_out[si] = lse;
        if (entropy_out) entropy_out[si] = (float)((double)lse - A / L);
        if (max_weight_out) max_weight_out[si] = expf(M - lse);
        if (argmax_out) argmax_out[si] = (unsigned int)arg;
    }
}

#define DECODE_KERNELS(T, SUFFIX)                                                                             \
    extern "C" __global__ void __launch_bounds__(DECODE_THREADS)                                              \
        attn_decode_partial_##SUFFIX(const AttnParams p) {                                                    \
        attn_decode_partial<T>((const T*)p.q, p.q_stride, (const T*)p.k, (const T*)p.v, p.kv_stride,         \
                               p.groups, p.isolated, p.window, p.q_start, p.n_new, p.n_heads, p.n_kv_heads,   \
                               p.head_dim, p.scale, p.split_len, p.part_stat, p.part_arg, p.part_o);          \
    }                                                                                                         \
    extern "C" __global__ void attn_decode_combine_##SUFFIX(const AttnParams p) {                            \
        attn_decode_combine<T>(p.part_stat, p.part_arg, p.part_o, p.n_splits, p.n_new, p.n_heads,             \
                               p.head_dim, (T*)p.o, p.o_stride, p.lse, p.entropy, p.max_weight, p.argmax);    \
    }

DECODE_KERNELS(float, f32)
DECODE_KERNELS(bf16, bf16)
DECODE_KERNELS(f16, f16)
