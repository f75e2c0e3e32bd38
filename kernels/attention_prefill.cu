// attention_prefill.cu: fused prefill attention in the FlashAttention-2 manner, with the row statistics
// of the capture computed in the same pass.
// CPU twin: `attention` / `head_attention` / `softmax_row` in crates/attnscope-core/src/model/attention.rs (outputs, lse, Σp·s)
// and `row_stats` in crates/attnscope-core/src/capture/recorder.rs (entropy, max_weight, argmax_slot).
//
// Query row i (0 <= i < n_new) is cache slot q_start + i; it attends to key slots 0..q_start+i under the
// visibility rule `slot_visible_g` (common.cuh) = `AttentionMask::allows`: causal, sliding window by slot
// index, isolated groups. No T×T mask exists anywhere: visibility comes from slot indices and the int32
// `groups` array. GQA: query head h reads kv head h / (n_heads / n_kv_heads).
//
// Layouts (element strides, row-major):
//   q   [n_new rows, q_stride]          head h of row i at q + i·q_stride + h·head_dim (already rotated)
//   k,v [n_keys rows, kv_stride]        kv head g of slot j at k + j·kv_stride + g·head_dim (the KV cache;
//                                       n_keys = q_start + n_new slots are filled)
//   o   [n_new rows, o_stride]          same addressing as q
//   groups [n_keys] int32 (−1 = none)
//   lse, entropy, max_weight [n_heads, n_new] f32; argmax [n_heads, n_new] uint32 (key slot).
//   entropy, max_weight and argmax may be null (not computed into memory); lse is always written, because
//   the second pass (attention_probs.cu) recomputes probabilities from it.
// Per row, with s = scale·q·k over visible keys, online over key tiles with rescaling:
//   m = max s,  l = Σ exp(s − m),  a = Σ exp(s − m)·s,  O = Σ exp(s − m)·v / l,
//   lse = m + ln l,  entropy = lse − a / l  (= −Σ p ln p),  max_weight = exp(m − lse),
//   argmax = first key slot attaining m (ties to the lowest slot; on exact ties in p but not in s the CPU,
//   which compares rounded probabilities, may pick another slot).
//
// Two paths:
//  * attn_prefill_simt_<T>  (T = f32, bf16, f16): exact SIMT path, f32 scores, f64 l and a. Any head_dim <= 256.
//      Launch: grid (ceil(n_new / 4), n_heads), block 128 (4 warps, one query row per warp, keys in tiles of
//      32, lane j scores key j of the tile). Dynamic shared memory (32·(hd + 1) + 32·hd + 4·hd)·4 bytes
//      = (68·hd + 32)·4 bytes (34.9 KiB at hd 128); above 48 KiB (hd > 180) the launcher must raise
//      CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES.
//  * attn_prefill_<bf16|f16>_hd<HD> (HD = 32, 64, 80, 96, 128, 256): tensor cores, mma.sync.m16n8k16 with f32
//      accumulation. Q tile of 64 rows (16 per warp, fragments in registers), K/V tiles of BK = 64 keys
//      (32 for HD 256) in static shared memory (rows padded by 8 elements), S = QKᵀ and O += P·V by mma,
//      P rounded to the input type for the P·V product as FlashAttention-2 does (l and a use f32 P).
//      Launch: grid (ceil(n_new / 64), n_heads), block 128. Static shared memory 2·BK·(HD+8)·2 + BK·4 bytes.
//      Since attention_prefill_fa2.cu this is the reference tensor-core path (ATTNSCOPE_PREFILL_KERNEL=reference,
//      `PrefillKernel::Reference`), and the only one at HD 256.

// ---------------------------------------------------------------------------------------------------------
// SIMT path
// ---------------------------------------------------------------------------------------------------------

#define SIMT_ROWS 4
#define SIMT_BK 32
#define SIMT_MAX_HD 256

template <typename T>
__device__ void attn_prefill_simt(const T* __restrict__ q, int q_stride, const T* __restrict__ k,
                                  const T* __restrict__ v, int kv_stride, T* __restrict__ o, int o_stride,
                                  float* __restrict__ lse_out, float* __restrict__ entropy_out,
                                  float* __restrict__ max_weight_out, unsigned int* __restrict__ argmax_out,
                                  const int* __restrict__ groups, int isolated, int window, int q_start, int n_new,
                                  int n_heads, int n_kv_heads, int head_dim, float scale) {
    extern __shared__ float smem[];
    const int hd = head_dim;
    const int ks_stride = hd + 1;  // padding: lane j reads row j, so rows must not share a bank
    float* Ks = smem;                          // [SIMT_BK][hd + 1]
    float* Vs = Ks + SIMT_BK * ks_stride;      // [SIMT_BK][hd]
    float* Qs = Vs + SIMT_BK * hd;             // [SIMT_ROWS][hd]

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int h = blockIdx.y;
    const int kvh = h / (n_heads / n_kv_heads);
    const int row0 = blockIdx.x * SIMT_ROWS;
    const int row = row0 + warp;
    const bool valid = row < n_new;
    const int qslot = q_start + row;
    const int group_q = valid ? groups[qslot] : -1;

    for (int d = lane; d < hd; d += 32)
        Qs[warp * hd + d] = valid ? to_f32(q[(long long)row * q_stride + (long long)h * hd + d]) : 0.0f;

    const int last_row = min(n_new - 1, row0 + SIMT_ROWS - 1);
    const int key_end = q_start + last_row + 1;  // causal bound of the block's last row
    int key_begin = 0;
    if (window > 0) key_begin = max(0, q_start + row0 - window + 1);
    key_begin = (key_begin / SIMT_BK) * SIMT_BK;

    float m = ATTN_NEG_INF;
    double l = 0.0, a = 0.0;
    float acc[SIMT_MAX_HD / 32];
#pragma unroll
    for (int i = 0; i < SIMT_MAX_HD / 32; ++i) acc[i] = 0.0f;
    float best_s = ATTN_NEG_INF;
    int best_k = 0;

    for (int kt = key_begin; kt < key_end; kt += SIMT_BK) {
        __syncthreads();  // previous tile fully consumed (and Qs written, on the first pass)
        for (int idx = threadIdx.x; idx < SIMT_BK * hd; idx += blockDim.x) {
            const int j = idx / hd, d = idx - j * hd;
            const int key = kt + j;
            float kv = 0.0f, vv = 0.0f;  // zero beyond the filled keys: 0 · garbage could be NaN
            if (key < key_end) {
                const long long off = (long long)key * kv_stride + (long long)kvh * hd + d;
                kv = to_f32(k[off]);
                vv = to_f32(v[off]);
            }
            Ks[j * ks_stride + d] = kv;
            Vs[j * hd + d] = vv;
        }
        __syncthreads();

        const int key = kt + lane;
        float s = ATTN_NEG_INF;
        if (valid && key < key_end && slot_visible_g(qslot, key, group_q, groups[key], isolated, window)) {
            float dot = 0.0f;
            for (int d = 0; d < hd; ++d) dot += Qs[warp * hd + d] * Ks[lane * ks_stride + d];
            s = scale * dot;
        }
        const float mt = warp_max(s);
        if (mt == ATTN_NEG_INF) continue;  // nothing visible to this row in this tile (warp-uniform)
        const float m_new = fmaxf(m, mt);
        const float factor = expf(m - m_new);  // 0 on the first visible tile (m = −inf)
        const float e = s == ATTN_NEG_INF ? 0.0f : expf(s - m_new);
        const double tile_l = warp_sum_d((double)e);
        const double tile_a = warp_sum_d(s == ATTN_NEG_INF ? 0.0 : (double)e * (double)s);
        l = l * (double)factor + tile_l;
        a = a * (double)factor + tile_a;
        if (mt > best_s) {
            const unsigned int hit = __ballot_sync(0xffffffffu, s == mt);
            best_s = mt;
            best_k = kt + __ffs(hit) - 1;
        }
#pragma unroll
        for (int i = 0; i < SIMT_MAX_HD / 32; ++i) acc[i] *= factor;
        for (int j = 0; j < SIMT_BK; ++j) {
            const float ej = __shfl_sync(0xffffffffu, e, j);
            if (ej == 0.0f) continue;  // uniform across the warp (ej is broadcast)
#pragma unroll
            for (int i = 0; i < SIMT_MAX_HD / 32; ++i) {
                const int d = lane + 32 * i;
                if (d < hd) acc[i] += ej * Vs[j * hd + d];
            }
        }
        m = m_new;
    }

    if (!valid) return;
    // Every row sees at least itself, so l > 0 here.
    const float lse = m + (float)log(l);
    const float inv_l = (float)(1.0 / l);
#pragma unroll
    for (int i = 0; i < SIMT_MAX_HD / 32; ++i) {
        const int d = lane + 32 * i;
        if (d < hd) o[(long long)row * o_stride + (long long)h * hd + d] = from_f32<T>(acc[i] * inv_l);
    }
    if (lane == 0) {
        const long long si = (long long)h * n_new + row;
        lse_out[si] = lse;
        if (entropy_out) entropy_out[si] = (float)((double)lse - a / l);
        if (max_weight_out) max_weight_out[si] = expf(m - lse);
        if (argmax_out) argmax_out[si] = (unsigned int)best_k;
    }
}

#define PREFILL_SIMT_KERNEL(T, SUFFIX)                                                                        \
    extern "C" __global__ void __launch_bounds__(128)                                                         \
        attn_prefill_simt_##SUFFIX(const AttnParams p) {                                                      \
        attn_prefill_simt<T>((const T*)p.q, p.q_stride, (const T*)p.k, (const T*)p.v, p.kv_stride, (T*)p.o,  \
                             p.o_stride, p.lse, p.entropy, p.max_weight, p.argmax, p.groups, p.isolated,      \
                             p.window, p.q_start, p.n_new, p.n_heads, p.n_kv_heads, p.head_dim, p.scale);     \
    }

PREFILL_SIMT_KERNEL(float, f32)
PREFILL_SIMT_KERNEL(bf16, bf16)
PREFILL_SIMT_KERNEL(f16, f16)

// ---------------------------------------------------------------------------------------------------------
// Tensor-core path (bf16 / f16 inputs, f32 accumulation)
// ---------------------------------------------------------------------------------------------------------

// mma16816<T> and pack_bits: common.cuh (shared with attention_prefill_fa2.cu).

#define TC_WARPS 4
#define TC_BQ (16 * TC_WARPS)

// Fragment coordinates (PTX ISA, mma.m16n8k16): lane = 4·g + t with g = lane / 4 (groupID), t = lane % 4.
//   A (16×16): reg0 = (row g,   cols 2t, 2t+1), reg1 = (row g+8, cols 2t, 2t+1),
//              reg2 = (row g,   cols 2t+8, 2t+9), reg3 = (row g+8, cols 2t+8, 2t+9)
//   B (16×8):  reg0 = (rows 2t, 2t+1, col g),    reg1 = (rows 2t+8, 2t+9, col g)
//   C (16×8):  c0, c1 = (row g, cols 2t, 2t+1),  c2, c3 = (row g+8, cols 2t, 2t+1)
template <typename T, int HD>
__device__ void attn_prefill_tc(const T* __restrict__ q, int q_stride, const T* __restrict__ k,
                                const T* __restrict__ v, int kv_stride, T* __restrict__ o, int o_stride,
                                float* __restrict__ lse_out, float* __restrict__ entropy_out,
                                float* __restrict__ max_weight_out, unsigned int* __restrict__ argmax_out,
                                const int* __restrict__ groups, int isolated, int window, int q_start, int n_new,
                                int n_heads, int n_kv_heads, float scale) {
    constexpr int BK = HD > 128 ? 32 : 64;
    constexpr int PAD = HD + 8;  // row stride in shared memory (elements)
    constexpr int NK = HD / 16;  // k-steps of S = Q·Kᵀ
    constexpr int NS = BK / 8;   // n-tiles of S (8 keys each)
    constexpr int NO = HD / 8;   // n-tiles of O (8 dims each)
    __shared__ __align__(16) unsigned short Ks[BK * PAD];  // read as 32-bit pairs: keep 4-byte alignment
    __shared__ __align__(16) unsigned short Vs[BK * PAD];
    __shared__ int Kg[BK];

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int h = blockIdx.y;
    const int kvh = h / (n_heads / n_kv_heads);
    const int tile_row0 = blockIdx.x * TC_BQ;
    // The two query rows of this thread: r[0] = g, r[1] = g + 8 within the warp's 16 rows.
    int row[2], qslot[2], group_q[2];
    bool valid[2];
#pragma unroll
    for (int x = 0; x < 2; ++x) {
        row[x] = tile_row0 + warp * 16 + g + 8 * x;
        valid[x] = row[x] < n_new;
        qslot[x] = q_start + row[x];
        group_q[x] = valid[x] ? groups[qslot[x]] : -1;
    }

    // Q fragments straight from global memory into registers (zeros for rows past n_new).
    unsigned int qf[NK][4];
    {
        const unsigned short* qb = reinterpret_cast<const unsigned short*>(q);
#pragma unroll
        for (int kk = 0; kk < NK; ++kk) {
#pragma unroll
            for (int r = 0; r < 4; ++r) {
                const int x = r & 1;               // reg 0, 2: row g; reg 1, 3: row g+8
                const int col = kk * 16 + 2 * t + (r >> 1) * 8;
                unsigned short lo = 0, hi = 0;
                if (valid[x]) {
                    const long long off = (long long)row[x] * q_stride + (long long)h * HD + col;
                    lo = qb[off];
                    hi = qb[off + 1];
                }
                qf[kk][r] = pack_bits(lo, hi);
            }
        }
    }

    const int last_row = min(n_new - 1, tile_row0 + TC_BQ - 1);
    const int key_end = q_start + last_row + 1;
    int key_begin = 0;
    if (window > 0) key_begin = max(0, q_start + tile_row0 - window + 1);
    key_begin = (key_begin / BK) * BK;

    float m[2] = {ATTN_NEG_INF, ATTN_NEG_INF};
    float l[2] = {0.0f, 0.0f}, a[2] = {0.0f, 0.0f};  // this thread's partial sums (quad-reduced at the end)
    float best_s[2] = {ATTN_NEG_INF, ATTN_NEG_INF};
    int best_k[2] = {0x7fffffff, 0x7fffffff};
    float oacc[NO][4];
#pragma unroll
    for (int n = 0; n < NO; ++n)
#pragma unroll
        for (int r = 0; r < 4; ++r) oacc[n][r] = 0.0f;

    const unsigned short* kb = reinterpret_cast<const unsigned short*>(k);
    const unsigned short* vb = reinterpret_cast<const unsigned short*>(v);

    for (int kt = key_begin; kt < key_end; kt += BK) {
        __syncthreads();
        for (int idx = threadIdx.x; idx < BK * HD; idx += blockDim.x) {
            const int j = idx / HD, d = idx - j * HD;
            const int key = kt + j;
            unsigned short kv = 0, vv = 0;
            if (key < key_end) {
                const long long off = (long long)key * kv_stride + (long long)kvh * HD + d;
                kv = kb[off];
                vv = vb[off];
            }
            Ks[j * PAD + d] = kv;
            Vs[j * PAD + d] = vv;
        }
        for (int j = threadIdx.x; j < BK; j += blockDim.x) Kg[j] = kt + j < key_end ? groups[kt + j] : -1;
        __syncthreads();

        // S = Q·Kᵀ for this warp's 16 rows × BK keys.
        float s[NS][4];
#pragma unroll
        for (int j = 0; j < NS; ++j) {
#pragma unroll
            for (int r = 0; r < 4; ++r) s[j][r] = 0.0f;
            const unsigned short* krow = Ks + (j * 8 + g) * PAD;
#pragma unroll
            for (int kk = 0; kk < NK; ++kk) {
                const unsigned int b0 = *reinterpret_cast<const unsigned int*>(krow + kk * 16 + 2 * t);
                const unsigned int b1 = *reinterpret_cast<const unsigned int*>(krow + kk * 16 + 8 + 2 * t);
                mma16816<T>(s[j], qf[kk], b0, b1);
            }
        }

        // Scale, mask, online softmax. Element (j, r): row x = r >> 1, key kt + 8j + 2t + (r & 1).
        float factor[2];
        float tile_max[2] = {ATTN_NEG_INF, ATTN_NEG_INF};
#pragma unroll
        for (int j = 0; j < NS; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) {
                const int x = r >> 1;
                const int jj = j * 8 + 2 * t + (r & 1);
                const int key = kt + jj;
                const bool vis = valid[x] && key < key_end &&
                                 slot_visible_g(qslot[x], key, group_q[x], Kg[jj], isolated, window);
                s[j][r] = vis ? s[j][r] * scale : ATTN_NEG_INF;
                tile_max[x] = fmaxf(tile_max[x], s[j][r]);
            }
#pragma unroll
        for (int x = 0; x < 2; ++x) {
            tile_max[x] = fmaxf(tile_max[x], __shfl_xor_sync(0xffffffffu, tile_max[x], 1));
            tile_max[x] = fmaxf(tile_max[x], __shfl_xor_sync(0xffffffffu, tile_max[x], 2));
            const float m_new = fmaxf(m[x], tile_max[x]);
            // m_new = −inf: nothing visible yet; keep everything as is (factor 1, all p = 0).
            factor[x] = m_new == ATTN_NEG_INF ? 1.0f : expf(m[x] - m_new);
            m[x] = m_new;
            l[x] *= factor[x];
            a[x] *= factor[x];
        }
#pragma unroll
        for (int j = 0; j < NS; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) {
                const int x = r >> 1;
                const float sv = s[j][r];
                const int key = kt + j * 8 + 2 * t + (r & 1);
                if (sv > best_s[x] || (sv == best_s[x] && sv != ATTN_NEG_INF && key < best_k[x])) {
                    best_s[x] = sv;
                    best_k[x] = key;
                }
                const float p = sv == ATTN_NEG_INF ? 0.0f : expf(sv - m[x]);
                l[x] += p;
                a[x] += sv == ATTN_NEG_INF ? 0.0f : p * sv;
                s[j][r] = p;
            }
#pragma unroll
        for (int n = 0; n < NO; ++n) {
            oacc[n][0] *= factor[0];
            oacc[n][1] *= factor[0];
            oacc[n][2] *= factor[1];
            oacc[n][3] *= factor[1];
        }

        // O += P·V: P from the S accumulators (two 8-key n-tiles form one 16-key k-step).
#pragma unroll
        for (int kk = 0; kk < BK / 16; ++kk) {
            unsigned int pa[4];
            pa[0] = pack2<T>(s[2 * kk][0], s[2 * kk][1]);
            pa[1] = pack2<T>(s[2 * kk][2], s[2 * kk][3]);
            pa[2] = pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            pa[3] = pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
            const unsigned short* v0 = Vs + (kk * 16 + 2 * t) * PAD;
#pragma unroll
            for (int n = 0; n < NO; ++n) {
                const int d = n * 8 + g;
                const unsigned int b0 = pack_bits(v0[d], v0[PAD + d]);
                const unsigned int b1 = pack_bits(v0[8 * PAD + d], v0[9 * PAD + d]);
                mma16816<T>(oacc[n], pa, b0, b1);
            }
        }
    }

    // Reduce the partial sums over the quad (the 4 lanes that share a row) and write.
#pragma unroll
    for (int x = 0; x < 2; ++x) {
#pragma unroll
        for (int off = 1; off <= 2; off <<= 1) {
            l[x] += __shfl_xor_sync(0xffffffffu, l[x], off);
            a[x] += __shfl_xor_sync(0xffffffffu, a[x], off);
            const float os = __shfl_xor_sync(0xffffffffu, best_s[x], off);
            const int ok = __shfl_xor_sync(0xffffffffu, best_k[x], off);
            if (os > best_s[x] || (os == best_s[x] && ok < best_k[x])) {
                best_s[x] = os;
                best_k[x] = ok;
            }
        }
        if (!valid[x]) continue;
        const float inv_l = 1.0f / l[x];
        const float lse = m[x] + logf(l[x]);
        T* orow = o + (long long)row[x] * o_stride + (long long)h * HD;
#pragma unroll
        for (int n = 0; n < NO; ++n) {
            const int d = n * 8 + 2 * t;
            orow[d] = from_f32<T>(oacc[n][2 * x] * inv_l);
            orow[d + 1] = from_f32<T>(oacc[n][2 * x + 1] * inv_l);
        }
        if (t == 0) {
            const long long si = (long long)h * n_new + row[x];
            lse_out[si] = lse;
            if (entropy_out) entropy_out[si] = lse - a[x] * inv_l;
            if (max_weight_out) max_weight_out[si] = expf(m[x] - lse);
            if (argmax_out) argmax_out[si] = (unsigned int)best_k[x];
        }
    }
}

#define PREFILL_TC_KERNEL(T, SUFFIX, HD)                                                                      \
    extern "C" __global__ void __launch_bounds__(128)                                                         \
        attn_prefill_##SUFFIX##_hd##HD(const AttnParams p) {                                                  \
        attn_prefill_tc<T, HD>((const T*)p.q, p.q_stride, (const T*)p.k, (const T*)p.v, p.kv_stride,         \
                               (T*)p.o, p.o_stride, p.lse, p.entropy, p.max_weight, p.argmax, p.groups,       \
                               p.isolated, p.window, p.q_start, p.n_new, p.n_heads, p.n_kv_heads, p.scale);   \
    }

#define PREFILL_TC_ALL_HD(T, SUFFIX)                                                                          \
    PREFILL_TC_KERNEL(T, SUFFIX, 32)                                                                          \
    PREFILL_TC_KERNEL(T, SUFFIX, 64)                                                                          \
    PREFILL_TC_KERNEL(T, SUFFIX, 80)                                                                          \
    PREFILL_TC_KERNEL(T, SUFFIX, 96)                                                                          \
    PREFILL_TC_KERNEL(T, SUFFIX, 128)                                                                         \
    PREFILL_TC_KERNEL(T, SUFFIX, 256)

PREFILL_TC_ALL_HD(bf16, bf16)
PREFILL_TC_ALL_HD(f16, f16)
