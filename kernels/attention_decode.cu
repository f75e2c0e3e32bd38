// attention_decode.cu: decode attention for one or a few query rows (a generated token, or a parallel set
// of tokens) against a long KV cache, split over the cache length (split-K / flash-decoding).
// CPU twin: `attention` in crates/attnscope-core/src/model/attention.rs with n_new small (the same visibility rule, lse, Σp·s) and
// `row_stats` in crates/attnscope-core/src/capture/recorder.rs for entropy / max_weight / argmax.
//
// Query row i (0 <= i < n_q <= 8) is slot q_start + i; keys are slots 0..q_start+n_q−1 of the cache.
// Layouts of q, k, v, o, groups as in attention_prefill.cu. GQA: query head h reads kv head h / G with
// G = n_heads / n_kv_heads; one block takes all (or a chunk of) the G query heads of one kv head, so each
// K/V row of a split is read from memory once per kv head, not once per query head.
//
// 1. attn_decode_partial_<T>(AttnParams: q, q_stride, k, v, kv_stride, groups, isolated, window, q_start,
//                            n_new = n_q, n_heads, n_kv_heads, head_dim, scale, split_len, part_stat,
//                            part_arg, part_o)
//    Grid (n_splits = ceil(n_keys / split_len), n_kv_heads · chunks), block 128 (4 warps). Block (z, y) takes
//    kv head g = y / chunks and its query heads h0 + 0..nh with hpb = ceil(G / chunks), h0 = g·G + c·hpb
//    (c = y mod chunks), nh = min(hpb, G − c·hpb), i.e. R = nh · n_q rows (R <= DECODE_MAX_ROWS = 32; the host
//    picks chunks so that it holds), over keys [z·split_len, min((z+1)·split_len, n_keys)); it writes per
//    query head h and row i:
//      part_stat [n_heads, n_splits, n_q, 4] f32: m (max score, −inf if nothing visible), l = Σ exp(s − m),
//                a = Σ exp(s − m)·s, and the best score (= m);
//      part_arg  [n_heads, n_splits, n_q] int32: first key slot attaining m (−1 if none);
//      part_o    [n_heads, n_splits, n_q, head_dim] f32: Σ exp(s − m)·v.
//    Scores: a warp takes one key at a time (lanes over head_dim, the key row in registers) and scores it
//    against all R rows; per-row max / Σ: one warp per row; P·V: threads own output dims tid and tid + 128,
//    all R rows at once (V row read once per block). Dynamic shared memory R·(head_dim + split_len)·4 bytes
//    (the host keeps it <= 48 KiB: 32 rows × (128 + 256) × 4 = 48 KiB). head_dim <= 256.
//    The host (ops::decode_plan) picks split_len from n_keys and the SM count so that n_splits · n_kv_heads ·
//    chunks fills the device at short contexts too.
//
// 2. attn_decode_combine_<T>(part_stat, part_arg, part_o, n_splits, n_q, n_heads, head_dim, o, o_stride, lse,
//                            entropy, max_weight, argmax)
//    Merges the splits of row i, head h: M = max m_z, L = Σ l_z·e^(m_z − M), A = Σ a_z·e^(m_z − M),
//    O = Σ o_z·e^(m_z − M) / L, lse = M + ln L, entropy = lse − A/L, max_weight = e^(M − lse), argmax = the
//    lowest slot attaining M. lse/entropy/max_weight/argmax are [n_heads, n_q] (entropy, max_weight and
//    argmax may be null). Launch: grid (n_heads, n_q), block 128.
//
// 1b/2b. attn_decode_partial_batch_<T> / attn_decode_combine_batch_<T>(AttnParamsBatch b): the same for up
//    to DECODE_MAX_BATCH sequences at once (a batched decode step), sequence z = blockIdx.z with parameter
//    block b.p[z]. Grid (max n_splits, n_kv_heads · chunks, batch) and (n_heads, max n_q, batch): one split
//    length and one chunk count for the batch (ops::decode_batch_plan), each sequence its own n_splits (its
//    blocks past them return at once), its own partials, lse rows and output rows.
//
// 3. Probability rows and the capture reductions (exact weights, sink/prev/self/group mass, received,
//    distance buckets) for these rows come from attention_probs.cu with n_new = n_q and the lse written by
//    step 2, launched with a key_split (e.g. 1024) so a long cache is spread over many blocks.
//
// l and a are accumulated in f64 inside a block (f32 scores), as the CPU accumulates them in f64.

#define DECODE_MAX_Q 8
#define DECODE_MAX_ROWS 32
#define DECODE_THREADS 128
#define DECODE_MAX_HD 256

template <typename T>
__device__ void attn_decode_partial(const T* __restrict__ q, int q_stride, const T* __restrict__ k,
                                    const T* __restrict__ v, int kv_stride, const int* __restrict__ groups,
                                    int isolated, int window, int q_start, int n_q, int n_heads, int n_kv_heads,
                                    int head_dim, float scale, int split_len, int n_splits, int chunks,
                                    float* __restrict__ part_stat, int* __restrict__ part_arg,
                                    float* __restrict__ part_o) {
    extern __shared__ float smem[];
    const int hd = head_dim;
    const int z = blockIdx.x;
    // A batched launch covers the longest sequence's splits; a shorter sequence's extra blocks do nothing.
    if (z >= n_splits) return;
    const int group = n_heads / n_kv_heads;
    const int kvh = blockIdx.y / chunks, c = blockIdx.y - kvh * chunks;
    const int hpb = (group + chunks - 1) / chunks;
    const int h0 = kvh * group + c * hpb;
    const int nh = min(hpb, group - c * hpb);
    const int R = nh * n_q;
    // The host checks these; never index past the per-row registers.
    if (nh <= 0 || n_q > DECODE_MAX_Q || R > DECODE_MAX_ROWS || hd > DECODE_MAX_HD) return;
    float* Qs = smem;           // [R][hd], row ρ = hi·n_q + i ↔ query head h0 + hi, query row i
    float* Sc = smem + R * hd;  // [R][split_len]: scores, then exp(s − m)

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int n_keys = q_start + n_q;
    const int key0 = z * split_len;
    const int len = max(0, min(split_len, n_keys - key0));

    for (int idx = threadIdx.x; idx < R * hd; idx += blockDim.x) {
        const int rho = idx / hd, d = idx - rho * hd;
        const int hi = rho / n_q, i = rho - hi * n_q;
        Qs[idx] = to_f32(q[(long long)i * q_stride + (long long)(h0 + hi) * hd + d]);
    }
    __syncthreads();

    // Scores: warp w takes keys w, w+4, …; lanes split the head dimension; the key row is loaded once and
    // scored against every row of the block.
    for (int j = warp; j < len; j += DECODE_THREADS / 32) {
        const int key = key0 + j;
        const T* krow = k + (long long)key * kv_stride + (long long)kvh * hd;
        float kreg[DECODE_MAX_HD / 32];
#pragma unroll
        for (int t = 0; t < DECODE_MAX_HD / 32; ++t) {
            const int d = lane + 32 * t;
            kreg[t] = d < hd ? to_f32(krow[d]) : 0.0f;
        }
        const int group_k = groups[key];
        unsigned int vis = 0;  // bit i: row i sees this key (the same for every query head)
        for (int i = 0; i < n_q; ++i) {
            const int qslot = q_start + i;
            if (slot_visible_g(qslot, key, groups[qslot], group_k, isolated, window)) vis |= 1u << i;
        }
        for (int rho = 0; rho < R; ++rho) {
            float dot = 0.0f;
#pragma unroll
            for (int t = 0; t < DECODE_MAX_HD / 32; ++t) {
                const int d = lane + 32 * t;
                if (d < hd) dot += Qs[rho * hd + d] * kreg[t];
            }
            dot = warp_sum(dot);
            if (lane == 0) Sc[rho * split_len + j] = (vis >> (rho % n_q)) & 1u ? scale * dot : ATTN_NEG_INF;
        }
    }
    __syncthreads();

    // Per row (one warp each): max, first argmax, then exp(s − m) in place with Σ and Σ e·s in f64.
    for (int rho = warp; rho < R; rho += DECODE_THREADS / 32) {
        float* row = Sc + rho * split_len;
        float best = ATTN_NEG_INF;
        int best_j = 0x7fffffff;
        for (int j = lane; j < len; j += 32) {
            if (row[j] > best) {  // j increases per lane, so strict > keeps the first
                best = row[j];
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
        double l = 0.0, a = 0.0;
        for (int j = lane; j < len; j += 32) {
            const float s = row[j];
            const float e = s == ATTN_NEG_INF ? 0.0f : expf(s - best);
            l += (double)e;
            a += s == ATTN_NEG_INF ? 0.0 : (double)e * (double)s;
            row[j] = e;
        }
        l = warp_sum_d(l);
        a = warp_sum_d(a);
        if (lane == 0) {
            const int h = h0 + rho / n_q, i = rho % n_q;
            const long long pi = ((long long)h * n_splits + z) * n_q + i;
            float* st = part_stat + pi * 4;
            st[0] = best;
            st[1] = (float)l;
            st[2] = (float)a;
            st[3] = best;
            part_arg[pi] = best == ATTN_NEG_INF ? -1 : key0 + best_j;
        }
    }
    __syncthreads();

    // Partial outputs: thread owns dims tid and tid + 128 of every row; each V row is read once.
    float acc[DECODE_MAX_ROWS][DECODE_MAX_HD / DECODE_THREADS];
#pragma unroll
    for (int rho = 0; rho < DECODE_MAX_ROWS; ++rho)
#pragma unroll
        for (int t = 0; t < DECODE_MAX_HD / DECODE_THREADS; ++t) acc[rho][t] = 0.0f;
    for (int j = 0; j < len; ++j) {
        const T* vrow = v + (long long)(key0 + j) * kv_stride + (long long)kvh * hd;
        float vd[DECODE_MAX_HD / DECODE_THREADS];
#pragma unroll
        for (int t = 0; t < DECODE_MAX_HD / DECODE_THREADS; ++t) {
            const int d = threadIdx.x + DECODE_THREADS * t;
            vd[t] = d < hd ? to_f32(vrow[d]) : 0.0f;
        }
#pragma unroll
        for (int rho = 0; rho < DECODE_MAX_ROWS; ++rho) {
            if (rho < R) {
                const float e = Sc[rho * split_len + j];
#pragma unroll
                for (int t = 0; t < DECODE_MAX_HD / DECODE_THREADS; ++t) acc[rho][t] += e * vd[t];
            }
        }
    }
#pragma unroll
    for (int rho = 0; rho < DECODE_MAX_ROWS; ++rho) {
        if (rho >= R) break;
        const int h = h0 + rho / n_q, i = rho % n_q;
#pragma unroll
        for (int t = 0; t < DECODE_MAX_HD / DECODE_THREADS; ++t) {
            const int d = threadIdx.x + DECODE_THREADS * t;
            if (d < hd) part_o[(((long long)h * n_splits + z) * n_q + i) * hd + d] = acc[rho][t];
        }
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

// A batch of decode calls (the sequences of one batched forward pass, same layer shape) in one launch:
// blockIdx.z is the sequence, whose parameter block is b.p[blockIdx.z] (its own q/o rows, cache, partials,
// lse rows, n_splits, n_new). DECODE_MAX_BATCH (8, from params.rs) blocks of 256 bytes are 2 KiB of kernel
// parameters (the limit is 4 KiB).
#ifndef DECODE_MAX_BATCH
#error "DECODE_MAX_BATCH is not defined: compile through attnscope::cuda::compile_kernel"
#endif
struct AttnParamsBatch {
    AttnParams p[DECODE_MAX_BATCH];
};
static_assert(sizeof(AttnParamsBatch) == DECODE_MAX_BATCH * ATTN_PARAMS_SIZE, "AttnParamsBatch: padding");

// The kernels below unpack one parameter block; `n_splits` is gridDim.x for one sequence and p.n_splits for a
// sequence of a batched launch (whose grid covers the longest sequence's splits).
template <typename T>
__device__ __forceinline__ void decode_partial_of(const AttnParams& p, int n_splits) {
    attn_decode_partial<T>((const T*)p.q, p.q_stride, (const T*)p.k, (const T*)p.v, p.kv_stride, p.groups,
                           p.isolated, p.window, p.q_start, p.n_new, p.n_heads, p.n_kv_heads, p.head_dim, p.scale,
                           p.split_len, n_splits, gridDim.y / p.n_kv_heads, p.part_stat, p.part_arg, p.part_o);
}
template <typename T>
__device__ __forceinline__ void decode_combine_of(const AttnParams& p) {
    attn_decode_combine<T>(p.part_stat, p.part_arg, p.part_o, p.n_splits, p.n_new, p.n_heads, p.head_dim,
                           (T*)p.o, p.o_stride, p.lse, p.entropy, p.max_weight, p.argmax);
}

#define DECODE_KERNELS(T, SUFFIX)                                                                             \
    extern "C" __global__ void __launch_bounds__(DECODE_THREADS)                                              \
        attn_decode_partial_##SUFFIX(const AttnParams p) {                                                    \
        decode_partial_of<T>(p, gridDim.x);                                                                   \
    }                                                                                                         \
    extern "C" __global__ void attn_decode_combine_##SUFFIX(const AttnParams p) { decode_combine_of<T>(p); }  \
    extern "C" __global__ void __launch_bounds__(DECODE_THREADS)                                              \
        attn_decode_partial_batch_##SUFFIX(const AttnParamsBatch b) {                                         \
        decode_partial_of<T>(b.p[blockIdx.z], b.p[blockIdx.z].n_splits);                                     \
    }                                                                                                         \
    extern "C" __global__ void attn_decode_combine_batch_##SUFFIX(const AttnParamsBatch b) {                 \
        decode_combine_of<T>(b.p[blockIdx.z]);                                                                \
    }

DECODE_KERNELS(float, f32)
DECODE_KERNELS(bf16, bf16)
DECODE_KERNELS(f16, f16)
