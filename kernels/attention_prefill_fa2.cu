// attention_prefill_fa2.cu: the fast tensor-core prefill, same semantics and outputs as
// `attn_prefill_<T>_hd<HD>` of attention_prefill.cu (the reference path, kept selectable).
// CPU twin: `attention` / `head_attention` / `softmax_row` in crates/attnscope-core/src/model/attention.rs and
// `row_stats` in crates/attnscope-core/src/capture/recorder.rs (as for attention_prefill.cu).
//
// Kernels: attn_prefill_fa2_<bf16|f16>_hd<HD>[_stats], HD = 32, 64, 80, 96, 128 (HD 256 stays on the
// reference kernel). `_stats` also writes entropy / max_weight / argmax (each may still be null); the plain
// instance writes O and lse only (statistics are a template parameter, so the plain one carries no Σp·s or
// argmax work). Layouts of q, k, v, o, groups, lse, entropy, max_weight, argmax: attention_prefill.cu.
// Extra requirements (the launcher falls back to the reference kernel otherwise): kv_stride % 8 == 0 and
// k, v 16-byte aligned (K/V rows are copied in 16-byte cp.async chunks).
//
// Launch: grid (ceil(n_new / 64), n_heads), block 128 (4 warps × 16 query rows; block x takes row tile
//   ceil(n_new / 64) − 1 − x, the longest first), static shared memory
//   2 stages × (K + V) × BK × (HD + 8) × 2 bytes + 2 × BK × 4 bytes (groups), BK = 64 for HD <= 80 else 32:
//   HD 32: 20.5 KiB, 64: 36.5 KiB, 80: 44.5 KiB, 96: 26.5 KiB, 128: 34.5 KiB. __launch_bounds__(128, 3)
//   (<= 168 registers, 12 warps per SM) except where that would spill (FA2_MIN_BLOCKS below).
// Selection (crates/attnscope-cuda/src/ops/attention.rs): the default tensor-core prefill;
//   ATTNSCOPE_PREFILL_KERNEL=reference (or `PrefillKernel::Reference`) runs attention_prefill.cu instead.
//
// Differences to the reference kernel, all in the K-tile loop:
//  * tile classes per (Q tile, K tile), from slot indices only: FULL (every key visible to every query row of
//    the block: causal bound, window and groups provably pass) runs without any per-element check; tiles
//    outside [key_begin, key_end) are not visited; every other tile is PARTIAL and applies `slot_visible_g`
//    per element. The FULL tiles form one contiguous range and run in their own loop, then the PARTIAL ones
//    (window edge, diagonal) in a second loop; the order of tiles does not matter to the online softmax.
//    Groups: when `isolated` and some query row of the block has a group >= 0, with [gmin, gmax] the range
//    of those groups, every tile at or after the first key slot whose group lies in [gmin, gmax] is PARTIAL
//    (conservative: a key outside the range shares no group with any row; one scan of `groups` per block).
//  * exp2: p = 2^(s·scale·log2 e − m·scale·log2 e), one FFMA + MUFU.EX2 per element, m kept in raw scores.
//  * ldmatrix.x4 fragment loads of K (non-transposed) and V (.trans) from shared memory.
//  * K/V double-buffered with 16-byte cp.async (zero-fill past key_end): tile i+1 is copied while tile i
//    is computed; one __syncthreads per tile.
//
// Fragment layouts (PTX ISA, mma.m16n8k16 .bf16/.f16, f32 accumulate), lane = 4·g + t (g = lane/4, t = lane%4):
//   A 16×16 (row-major): a0 = (row g,   k 2t..2t+1)  a1 = (row g+8, k 2t..2t+1)
//                        a2 = (row g,   k 2t+8..9)   a3 = (row g+8, k 2t+8..9)      (low half = lower k)
//   B 16×8  ("col"):     b0 = (k 2t..2t+1, col g)    b1 = (k 2t+8..2t+9, col g)     (low half = lower k)
//   C 16×8:              c0,c1 = (row g, cols 2t, 2t+1)   c2,c3 = (row g+8, cols 2t, 2t+1)
// ldmatrix.m8n8.x4.b16: lanes 8i..8i+7 give the 16-byte row addresses of matrix i (rows 0..7); register ri
//   of lane (4g + t) gets matrix i's (row g, cols 2t, 2t+1); with .trans it gets (rows 2t, 2t+1, col g).
//   S = Q·Kᵀ: B[k = dim][n = key] = Ks[key][dim], so B's (k 2t..2t+1, col g) is Ks row g, two adjacent dims:
//     non-transposed ldmatrix. One x4 covers key n-tiles j, j+1 at one 16-dim k-step kk:
//     matrix 0 = keys 8j..8j+7 × dims 16kk..+7   → b0 of n-tile j     matrix 1 = same keys × dims 16kk+8..+15 → b1 of j
//     matrix 2 = keys 8j+8..+15 × dims 16kk..+7 → b0 of n-tile j+1   matrix 3 = keys 8j+8.. × dims 16kk+8.. → b1 of j+1
//     lane l addresses key 8j + (l & 7) + 8·(l >> 4), dim 16kk + 8·((l >> 3) & 1).
//   O += P·V: B[k = key][n = dim] = Vs[key][dim], so B's (k 2t..2t+1, col g) is a column pair: .trans.
//     One x4 covers dim n-tiles n, n+1 at one 16-key k-step kk:
//     matrix 0 = keys 16kk..+7 × dims 8n..+7    → b0 of n-tile n     matrix 1 = keys 16kk+8..+15 × dims 8n.. → b1 of n
//     matrix 2 = keys 16kk..+7 × dims 8n+8..+15 → b0 of n-tile n+1   matrix 3 = keys 16kk+8.. × dims 8n+8.. → b1 of n+1
//     lane l addresses key 16kk + (l & 7) + 8·((l >> 3) & 1), dim 8n + 8·(l >> 4).
//   P as A of k-step kk (keys 16kk..16kk+15) is the S accumulators of n-tiles 2kk, 2kk+1:
//     a0 = S[2kk] c0,c1   a1 = S[2kk] c2,c3   a2 = S[2kk+1] c0,c1   a3 = S[2kk+1] c2,c3 (cvt.rn.{bf16,f16}x2).
//   Q fragments are read once from global memory with the A layout (as the reference kernel).
// scripts/check_fa2_model.py replays these addresses (and the tile classes above) through a CPU model of
// ldmatrix and mma; keep it in step with this file.
// Shared rows are padded by 8 elements (16 bytes): a row stride of HD + 8 elements puts the 8 rows of
// every ldmatrix phase in 8 distinct 16-byte bank groups for each HD here.

#define FA2_WARPS 4
#define FA2_THREADS (32 * FA2_WARPS)
#define FA2_BQ (16 * FA2_WARPS)
#define FA2_LOG2E 1.4426950408889634f

/// 32-bit shared-memory address of a generic pointer into shared memory.
__device__ __forceinline__ unsigned int smem_addr(const void* p) {
    unsigned int r;
    asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(r) : "l"(p));
    return r;
}

/// 16-byte asynchronous copy global → shared; `bytes` 16 copies, 0 zero-fills the destination.
__device__ __forceinline__ void cp_async16(unsigned int dst, const void* src, int bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(bytes) : "memory");
}
/// 4-byte asynchronous copy (zero-fill when `bytes` is 0).
__device__ __forceinline__ void cp_async4(unsigned int dst, const void* src, int bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(dst), "l"(src), "r"(bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;" ::: "memory"); }

__device__ __forceinline__ void ldmatrix_x4(unsigned int* r, unsigned int addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
}
__device__ __forceinline__ void ldmatrix_x4_trans(unsigned int* r, unsigned int addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
}

/// 2^x (MUFU.EX2, flush-to-zero; 2^−inf = 0).
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/// Two f32 rounded to nearest-even into one register (low half = `lo`), one cvt.
template <typename T> __device__ __forceinline__ unsigned int pack2_rn(float lo, float hi);
template <> __device__ __forceinline__ unsigned int pack2_rn<bf16>(float lo, float hi) {
    unsigned int r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));  // first source → upper half
    return r;
}
template <> __device__ __forceinline__ unsigned int pack2_rn<f16>(float lo, float hi) {
    unsigned int r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

template <typename T, int HD, bool STATS>
__device__ void attn_prefill_fa2(const AttnParams& p) {
    constexpr int BK = HD <= 80 ? 64 : 32;     // keys per tile (static shared memory <= 48 KiB)
    constexpr int PAD = HD + 8;                // shared row stride (elements)
    constexpr int TILE = BK * PAD;             // elements of one K or V tile
    constexpr int NK = HD / 16;                // k-steps of S = Q·Kᵀ
    constexpr int NS = BK / 8;                 // key n-tiles of S
    constexpr int NO = HD / 8;                 // dim n-tiles of O
    constexpr int CPR = HD / 8;                // 16-byte chunks per K/V row
    constexpr int NCH = BK * CPR / FA2_THREADS;  // chunks per thread per tile (K and V each)
    static_assert(HD % 16 == 0 && NS % 2 == 0 && NO % 2 == 0, "fragment pairing");
    static_assert(BK * CPR % FA2_THREADS == 0 && BK <= FA2_THREADS, "copy split");
    __shared__ __align__(16) unsigned short kv_s[2][2][TILE];  // [stage][K, V][key][dim]
    __shared__ int kg_s[2][BK];                                 // [stage][key] group ids (PARTIAL tiles)
    __shared__ int first_grouped_s, gmin_s, gmax_s;

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int h = blockIdx.y;
    const int kvh = h / (p.n_heads / p.n_kv_heads);
    const int n_new = p.n_new, q_start = p.q_start, window = p.window, isolated = p.isolated;
    const int* __restrict__ groups = p.groups;
    // Row tiles in reverse launch order: the blocks with the most keys (last rows, causal) start first, so
    // the short ones fill the tail of the grid instead of the long ones.
    const int tile_row0 = (gridDim.x - 1 - blockIdx.x) * FA2_BQ;
    int row[2], qslot[2], group_q[2];
    bool valid[2];
#pragma unroll
    for (int x = 0; x < 2; ++x) {
        row[x] = tile_row0 + warp * 16 + g + 8 * x;
        valid[x] = row[x] < n_new;
        qslot[x] = q_start + row[x];
        group_q[x] = valid[x] ? groups[qslot[x]] : -1;
    }

    unsigned int qf[NK][4];
    {
        const unsigned short* qb = reinterpret_cast<const unsigned short*>(p.q);
#pragma unroll
        for (int kk = 0; kk < NK; ++kk)
#pragma unroll
            for (int r = 0; r < 4; ++r) {
                const int x = r & 1;  // a0, a2: row g; a1, a3: row g+8
                const int col = kk * 16 + 2 * t + (r >> 1) * 8;
                unsigned short lo = 0, hi = 0;
                if (valid[x]) {
                    const long long off = (long long)row[x] * p.q_stride + (long long)h * HD + col;
                    lo = qb[off];
                    hi = qb[off + 1];
                }
                qf[kk][r] = pack_bits(lo, hi);
            }
    }

    // Key range of the block and the tile classes (tile n = keys n·BK .. n·BK + BK − 1).
    const int last_row = min(n_new - 1, tile_row0 + FA2_BQ - 1);
    const int qlo = q_start + tile_row0, qhi = q_start + last_row;
    const int key_end = qhi + 1;
    const int key_begin = window > 0 ? max(0, qlo - window + 1) : 0;
    const int nb = key_begin / BK, ne = (key_end + BK - 1) / BK;
    // FULL needs: n·BK + BK − 1 <= qlo (causal for the first row), n·BK >= qhi − window + 1 (window for the
    // last row), n·BK + BK − 1 < first grouped key (groups).
    int full_lo = nb, full_hi = min(ne, (qlo + 1) / BK);
    if (window > 0) full_lo = max(full_lo, (max(0, qhi - window + 1) + BK - 1) / BK);
    // Groups: [gmin, gmax] = range of the group ids >= 0 of the block's query rows (isolated only); a key
    // whose group lies outside it is hidden by no group rule, so keys before the first key in range are.
    if (tid == 0) {
        first_grouped_s = 0x7fffffff;
        gmin_s = 0x7fffffff;
        gmax_s = -1;
    }
    __syncthreads();
#pragma unroll
    for (int x = 0; x < 2; ++x)
        if (isolated && valid[x] && group_q[x] >= 0) {
            atomicMin(&gmin_s, group_q[x]);
            atomicMax(&gmax_s, group_q[x]);
        }
    __syncthreads();
    const int gmin = gmin_s, gmax = gmax_s;
    const bool need_groups = gmax >= 0;
    if (need_groups) {
        int first = 0x7fffffff;
        for (int key = nb * BK + tid; key < key_end; key += FA2_THREADS) {
            const int gk = groups[key];
            if (gk >= gmin && gk <= gmax) {
                first = key;
                break;
            }
        }
        atomicMin(&first_grouped_s, first);
    }
    __syncthreads();
    full_hi = min(full_hi, first_grouped_s / BK);
    if (full_lo >= full_hi) full_lo = full_hi = ne;  // no FULL tile: every tile of [nb, ne) is PARTIAL
    const int n_full = full_hi - full_lo, n_front = full_lo - nb;
    const int n_tiles = ne - nb;
    // Visit order: the FULL tiles, then the PARTIAL ones before them (window edge), then after them.
    auto tile_of = [&](int i) {
        const int j = i - n_full;
        return i < n_full ? full_lo + i : (j < n_front ? nb + j : full_hi + (j - n_front));
    };

    // Copies of tile n into stage `st`: thread tid copies chunks c = tid + i·FA2_THREADS (row c / CPR,
    // 16-byte column c % CPR) of K and of V; keys past key_end are zero-filled.
    const unsigned short* kb = reinterpret_cast<const unsigned short*>(p.k) + (long long)kvh * HD;
    const unsigned short* vb = reinterpret_cast<const unsigned short*>(p.v) + (long long)kvh * HD;
    const long long kv_stride = p.kv_stride;
    const unsigned int kv_base = smem_addr(&kv_s[0][0][0]);
    const unsigned int kg_base = smem_addr(&kg_s[0][0]);
    auto issue = [&](int n, int st) {
        const int kt = n * BK;
#pragma unroll
        for (int i = 0; i < NCH; ++i) {
            const int c = tid + i * FA2_THREADS;
            const int r = c / CPR, col = (c % CPR) * 8;
            const bool in = kt + r < key_end;
            const long long off = in ? (long long)(kt + r) * kv_stride + col : 0;
            const unsigned int dst = kv_base + (unsigned int)((st * 2 * TILE + r * PAD + col) * 2);
            cp_async16(dst, kb + off, in ? 16 : 0);
            cp_async16(dst + TILE * 2, vb + off, in ? 16 : 0);
        }
        if (need_groups && tid < BK) {
            const bool in = kt + tid < key_end;
            cp_async4(kg_base + (unsigned int)((st * BK + tid) * 4), groups + (in ? kt + tid : 0), in ? 4 : 0);
        }
        cp_async_commit();
    };

    // Per-lane ldmatrix offsets (bytes) inside one K or V tile, see the header.
    const unsigned int k_lane = (unsigned int)((((lane & 7) + 8 * (lane >> 4)) * PAD + 8 * ((lane >> 3) & 1)) * 2);
    const unsigned int v_lane = (unsigned int)((((lane & 7) + 8 * ((lane >> 3) & 1)) * PAD + 8 * (lane >> 4)) * 2);
    const float sl2 = p.scale * FA2_LOG2E;

    float m[2] = {ATTN_NEG_INF, ATTN_NEG_INF};  // running max of the raw scores q·k
    float l[2] = {0.0f, 0.0f}, a[2] = {0.0f, 0.0f};  // this thread's Σp, Σp·(q·k) (quad-reduced at the end)
    float best_s[2] = {ATTN_NEG_INF, ATTN_NEG_INF};
    int best_k[2] = {0x7fffffff, 0x7fffffff};
    float oacc[NO][4];
#pragma unroll
    for (int n = 0; n < NO; ++n)
#pragma unroll
        for (int r = 0; r < 4; ++r) oacc[n][r] = 0.0f;

    // One K tile: i-th in visit order, copies of it issued before; issues the copies of tile i + 1.
    // PARTIAL is a constant at both call sites below, so each inlined copy keeps only its own branch.
    auto step = [&](int i, const bool PARTIAL) {
        const int st = i & 1;
        const int kt = tile_of(i) * BK;
        cp_async_wait_all();
        __syncthreads();  // tile i landed for every thread; every thread is done with stage st ^ 1
        if (i + 1 < n_tiles) issue(tile_of(i + 1), st ^ 1);
        const unsigned int ks = kv_base + (unsigned int)(st * 2 * TILE * 2);
        const unsigned int vs = ks + TILE * 2;

        float s[NS][4];
#pragma unroll
        for (int j = 0; j < NS; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) s[j][r] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < NK; ++kk)
#pragma unroll
            for (int j = 0; j < NS; j += 2) {
                unsigned int b[4];
                ldmatrix_x4(b, ks + k_lane + (unsigned int)((j * 8 * PAD + kk * 16) * 2));
                mma16816<T>(s[j], qf[kk], b[0], b[1]);
                mma16816<T>(s[j + 1], qf[kk], b[2], b[3]);
            }

        // Element (j, r) of s: row x = r >> 1, key kt + 8j + 2t + (r & 1).
        if (PARTIAL) {
#pragma unroll
            for (int j = 0; j < NS; ++j)
#pragma unroll
                for (int r = 0; r < 4; ++r) {
                    const int x = r >> 1, jj = j * 8 + 2 * t + (r & 1);
                    const int gk = need_groups ? kg_s[st][jj] : -1;
                    if (!slot_visible_g(qslot[x], kt + jj, group_q[x], gk, isolated, window))
                        s[j][r] = ATTN_NEG_INF;
                }
        }
        float factor[2], mb[2];
#pragma unroll
        for (int x = 0; x < 2; ++x) {
            float mx = ATTN_NEG_INF;
#pragma unroll
            for (int j = 0; j < NS; ++j) mx = fmaxf(mx, fmaxf(s[j][2 * x], s[j][2 * x + 1]));
            if (STATS) {
                // First element of this thread attaining its maximum (keys ascend with j, then r).
                int bk = 0;
#pragma unroll
                for (int j = NS - 1; j >= 0; --j) {
                    if (s[j][2 * x + 1] == mx) bk = j * 8 + 2 * t + 1;
                    if (s[j][2 * x] == mx) bk = j * 8 + 2 * t;
                }
                if (mx > best_s[x] || (mx == best_s[x] && mx != ATTN_NEG_INF && kt + bk < best_k[x])) {
                    best_s[x] = mx;
                    best_k[x] = kt + bk;
                }
            }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float m_new = fmaxf(m[x], mx);
            // PARTIAL: m_new = −inf when nothing was visible yet; use 0 so that every p and factor is 0.
            const float m_use = PARTIAL && m_new == ATTN_NEG_INF ? 0.0f : m_new;
            factor[x] = fast_exp2((m[x] - m_use) * sl2);  // 0 while m = −inf
            m[x] = m_new;
            mb[x] = m_use * sl2;
        }
        float ls[2] = {0.0f, 0.0f}, as[2] = {0.0f, 0.0f};
#pragma unroll
        for (int j = 0; j < NS; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) {
                const int x = r >> 1;
                const float pv = fast_exp2(fmaf(s[j][r], sl2, -mb[x]));  // 0 for hidden (−inf) scores
                ls[x] += pv;
                // Σp·s: a hidden score is −inf with p = 0, and must add 0 (not 0·−inf = NaN).
                if (STATS) as[x] = fmaf(pv, PARTIAL && s[j][r] == ATTN_NEG_INF ? 0.0f : s[j][r], as[x]);
                s[j][r] = pv;
            }
#pragma unroll
        for (int x = 0; x < 2; ++x) {
            l[x] = fmaf(l[x], factor[x], ls[x]);
            if (STATS) a[x] = fmaf(a[x], factor[x], as[x]);
        }
#pragma unroll
        for (int n = 0; n < NO; ++n) {
            oacc[n][0] *= factor[0];
            oacc[n][1] *= factor[0];
            oacc[n][2] *= factor[1];
            oacc[n][3] *= factor[1];
        }
#pragma unroll
        for (int kk = 0; kk < BK / 16; ++kk) {
            unsigned int pa[4];
            pa[0] = pack2_rn<T>(s[2 * kk][0], s[2 * kk][1]);
            pa[1] = pack2_rn<T>(s[2 * kk][2], s[2 * kk][3]);
            pa[2] = pack2_rn<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            pa[3] = pack2_rn<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
            for (int n = 0; n < NO; n += 2) {
                unsigned int b[4];
                ldmatrix_x4_trans(b, vs + v_lane + (unsigned int)((kk * 16 * PAD + n * 8) * 2));
                mma16816<T>(oacc[n], pa, b[0], b[1]);
                mma16816<T>(oacc[n + 1], pa, b[2], b[3]);
            }
        }
    };

    if (n_tiles > 0) issue(tile_of(0), 0);
    for (int i = 0; i < n_full; ++i) step(i, false);
    for (int i = n_full; i < n_tiles; ++i) step(i, true);

    // Reduce over the quad (the 4 lanes of a row) and write.
#pragma unroll
    for (int x = 0; x < 2; ++x) {
#pragma unroll
        for (int off = 1; off <= 2; off <<= 1) {
            l[x] += __shfl_xor_sync(0xffffffffu, l[x], off);
            if (STATS) {
                a[x] += __shfl_xor_sync(0xffffffffu, a[x], off);
                const float os = __shfl_xor_sync(0xffffffffu, best_s[x], off);
                const int ok = __shfl_xor_sync(0xffffffffu, best_k[x], off);
                if (os > best_s[x] || (os == best_s[x] && ok < best_k[x])) {
                    best_s[x] = os;
                    best_k[x] = ok;
                }
            }
        }
        if (!valid[x]) continue;
        // Every valid row sees its own slot, so l > 0.
        const float inv_l = 1.0f / l[x];
        const float lse = m[x] * p.scale + logf(l[x]);
        T* orow = reinterpret_cast<T*>(p.o) + (long long)row[x] * p.o_stride + (long long)h * HD;
#pragma unroll
        for (int n = 0; n < NO; ++n) {
            const int d = n * 8 + 2 * t;
            orow[d] = from_f32<T>(oacc[n][2 * x] * inv_l);
            orow[d + 1] = from_f32<T>(oacc[n][2 * x + 1] * inv_l);
        }
        if (t == 0) {
            const long long si = (long long)h * n_new + row[x];
            p.lse[si] = lse;
            if (STATS) {
                if (p.entropy) p.entropy[si] = lse - p.scale * a[x] * inv_l;
                if (p.max_weight) p.max_weight[si] = inv_l;  // = exp(m·scale − lse)
                if (p.argmax) p.argmax[si] = (unsigned int)best_k[x];
            }
        }
    }
}

// Blocks per SM the register allocation must allow: 3 caps the kernel at 168 registers (12 warps per SM),
// which ptxas 12.8 meets without spilling at sm_90 for every instance but HD 80 with statistics, and at
// sm_80 for HD <= 64 (scripts/sass-report.sh); the others ask for 2 (up to 255 registers, 8 warps).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define FA2_MIN_BLOCKS(HD, STATS) ((STATS) && (HD) == 80 ? 2 : 3)
#else
#define FA2_MIN_BLOCKS(HD, STATS) ((HD) >= 80 ? 2 : 3)
#endif

#define PREFILL_FA2_KERNEL(T, SUFFIX, HD)                                                                     \
    extern "C" __global__ void __launch_bounds__(FA2_THREADS, FA2_MIN_BLOCKS(HD, 0))                          \
        attn_prefill_fa2_##SUFFIX##_hd##HD(const AttnParams p) {                                              \
        attn_prefill_fa2<T, HD, false>(p);                                                                    \
    }                                                                                                         \
    extern "C" __global__ void __launch_bounds__(FA2_THREADS, FA2_MIN_BLOCKS(HD, 1))                          \
        attn_prefill_fa2_##SUFFIX##_hd##HD##_stats(const AttnParams p) {                                      \
        attn_prefill_fa2<T, HD, true>(p);                                                                     \
    }

#define PREFILL_FA2_ALL_HD(T, SUFFIX)                                                                         \
    PREFILL_FA2_KERNEL(T, SUFFIX, 32)                                                                         \
    PREFILL_FA2_KERNEL(T, SUFFIX, 64)                                                                         \
    PREFILL_FA2_KERNEL(T, SUFFIX, 80)                                                                         \
    PREFILL_FA2_KERNEL(T, SUFFIX, 96)                                                                         \
    PREFILL_FA2_KERNEL(T, SUFFIX, 128)

PREFILL_FA2_ALL_HD(bf16, bf16)
PREFILL_FA2_ALL_HD(f16, f16)
