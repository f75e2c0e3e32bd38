// attention_probs.cu: the second pass. Recomputes attention probabilities from the log-sum-exp saved by the
// first pass (attention_prefill.cu, or attention_decode.cu for decode rows), only when a capture asks for
// them: exact weights for the selected heads, and/or the reductions of the capture statistics, without
// materialising T×T when only statistics are asked for.
// CPU twin: `HeadRecorder::observe` / `row_stats` in crates/attnscope-core/src/capture/recorder.rs (weights rows, sink / prev /
// self / group mass, received, distance buckets), with the probabilities of `softmax_row` in
// crates/attnscope-core/src/model/attention.rs. Entropy, max weight and argmax come from the first pass, not from here.
//
// p(q, k) = exp(scale·q·k − lse[q]) for visible keys (`slot_visible_g` = `AttentionMask::allows`), else 0.
//
// 1. attn_probs_<T>_w<W>(AttnParams: q, q_stride, k, kv_stride, lse, heads, n_sel, positions, groups,
//                        isolated, window, q_start, n_new, n_heads, n_kv_heads, head_dim, scale, split_len,
//                        weights, w_head_stride, w_row_stride, sink, prev, self_mass, group_mass, recv_part,
//                        distance)
//   T ∈ {f32, bf16, f16} (q, k as in attention_prefill.cu), W ∈ {f32, f16} (weights output, the dtypes of
//   the CPU's `HeadWeights`). lse [n_heads, n_new] f32 from the first pass; heads [n_sel] int32: the query
//   heads to capture (output index s = blockIdx.y ↔ query head heads[s]); positions [n_keys] int64; groups
//   [n_keys] int32. Outputs, each optional (null = not computed):
//     weights      W, row i of selected head s at weights + s·w_head_stride + i·w_row_stride, columns
//                  0..n_keys−1 (n_keys = q_start + n_new), zeros where hidden: finished on the device (no
//                  host normalisation). Point it at row q_start of a [cap, cap] buffer to fill the CPU's layout.
//     sink, prev, self_mass, group_mass   f32 [n_sel, n_new]: p(q, 0), p(q, q−1), p(q, q), Σ p over the other
//                  members of q's group (0 when q has no group; the host knows which rows have one).
//                  THE HOST MUST ZERO THEM before the launch: a block writes only the keys it covers, and
//                  group_mass is accumulated with atomicAdd (one per row and z-block).
//     recv_part    f64 [n_sel, row_groups, n_keys] (row_groups = gridDim.x): the weight key k received from
//                  the rows of row group x, written (not accumulated) for every key of the block's split, so
//                  it needs no zeroing; attn_probs_received_f32 (2.) sums it. f64 because one partial sums up
//                  to n_new / row_groups rows, as the CPU's f64 running sum (the scratch is small:
//                  row_groups · n_sel · n_keys · 8 bytes with row_groups · n_sel · n_z ≈ 16 blocks per SM).
//     distance     f64 [n_sel, 65]: distance[s, b] += Σ p over pairs with distance_bucket(pos[q] − pos[k]) = b
//                  (one atomicAdd per non-empty bucket and block).
//   Launch: grid (row_groups, n_sel, ceil(n_keys / split_len)), block 128; block (x, s, z) takes the 16-row
//   tiles x, x + row_groups, … against the keys [z·split_len, (z+1)·split_len) (split_len a multiple of 128,
//   at most 1024 = PROBS_MAX_CHUNKS · 128; the host rounds it), cut to what each tile can see unless weights
//   need every column. Thread j owns key chunk_start + j of each 128-key chunk, computes its 16 scores with
//   f32 dot products (q rows staged in shared memory, read 4 dims per 16-byte load) and keeps the chunk's received sum in its own slot of
//   shared memory across the tiles (no atomics). Dynamic shared memory 16·head_dim·4 bytes; static shared
//   memory (1024 + 65 + 16) doubles.
//
// 2. attn_probs_received_f32(AttnParams: recv_part, row_groups, n_sel, q_start, n_new, received,
//                            received_stride)
//   received [n_sel, received_stride] f64: received[s, k] += Σ_x recv_part[s, x, k] (accumulates across
//   launches like the CPU's running sum; k < n_keys only). Launch: grid (ceil(n_keys / 128), n_sel), block 128.

#define PROBS_ROWS 16
#define PROBS_THREADS 128
#define PROBS_MAX_CHUNKS 8

template <typename T, typename W>
__device__ void attn_probs(const T* __restrict__ q, int q_stride, const T* __restrict__ k, int kv_stride,
                           const float* __restrict__ lse, const int* __restrict__ heads, int n_sel,
                           const long long* __restrict__ positions, const int* __restrict__ groups, int isolated,
                           int window, int q_start, int n_new, int n_heads, int n_kv_heads, int head_dim,
                           float scale, int key_split, W* __restrict__ weights, long long w_head_stride,
                           long long w_row_stride, float* __restrict__ sink, float* __restrict__ prev,
                           float* __restrict__ self_mass, float* __restrict__ group_mass,
                           double* __restrict__ recv_part, double* __restrict__ distance) {
    extern __shared__ float Qs[];  // [PROBS_ROWS][head_dim]
    __shared__ double hist[ATTN_DISTANCE_BUCKETS];
    __shared__ double gmass[PROBS_ROWS];
    __shared__ double recv_acc[PROBS_MAX_CHUNKS * PROBS_THREADS];  // [chunk][thread]: owned by the thread

    const int hd = head_dim;
    const int sel = blockIdx.y;
    if (sel >= n_sel || key_split % PROBS_THREADS != 0 || key_split > PROBS_MAX_CHUNKS * PROBS_THREADS) return;
    const int h = heads[sel];
    const int kvh = h / (n_heads / n_kv_heads);
    const int n_keys = q_start + n_new;
    const int n_tiles = (n_new + PROBS_ROWS - 1) / PROBS_ROWS;
    const int split_lo = blockIdx.z * key_split;
    const int split_hi = min(n_keys, split_lo + key_split);

    for (int b = threadIdx.x; b < ATTN_DISTANCE_BUCKETS; b += blockDim.x) hist[b] = 0.0;
#pragma unroll
    for (int j = 0; j < PROBS_MAX_CHUNKS; ++j) recv_acc[j * PROBS_THREADS + threadIdx.x] = 0.0;

    int cur_bucket = -1;  // run-length cache of this thread's distance mass (few bucket changes per thread)
    double cur_mass = 0.0;

    for (int tile = blockIdx.x; tile < n_tiles; tile += gridDim.x) {
        const int row0 = tile * PROBS_ROWS;
        const int n_rows = min(PROBS_ROWS, n_new - row0);
        __syncthreads();  // the previous tile is done with Qs and gmass
        for (int idx = threadIdx.x; idx < PROBS_ROWS * hd; idx += blockDim.x) {
            const int r = idx / hd, d = idx - r * hd;
            Qs[idx] = r < n_rows ? to_f32(q[(long long)(row0 + r) * q_stride + (long long)h * hd + d]) : 0.0f;
        }
        if (threadIdx.x < PROBS_ROWS) gmass[threadIdx.x] = 0.0;

        float row_lse[PROBS_ROWS];
        int row_group[PROBS_ROWS];
        long long row_pos[PROBS_ROWS];
#pragma unroll
        for (int r = 0; r < PROBS_ROWS; ++r) {
            const bool ok = r < n_rows;
            row_lse[r] = ok ? lse[(long long)h * n_new + row0 + r] : 0.0f;
            row_group[r] = ok ? groups[q_start + row0 + r] : -1;
            row_pos[r] = ok ? positions[q_start + row0 + r] : 0;
        }
        __syncthreads();

        // Keys this tile covers: the block's split, cut to what its rows can see unless weights need every
        // column.
        int key_lo = split_lo, key_hi = split_hi;
        if (!weights) {
            const int last_slot = q_start + row0 + n_rows - 1;
            key_hi = min(key_hi, last_slot + 1);
            if (window > 0) key_lo = max(key_lo, q_start + row0 - window + 1);
        }
        // Whole 128-key chunks of the split: chunk j covers split_lo + 128·j + threadIdx.x.
        const int j_lo = key_lo > split_lo ? (key_lo - split_lo) / PROBS_THREADS : 0;
        for (int c0 = split_lo + j_lo * PROBS_THREADS; c0 < key_hi; c0 += PROBS_THREADS) {
            const int key = c0 + threadIdx.x;
            if (key < key_lo || key >= key_hi) continue;
            float acc[PROBS_ROWS];
#pragma unroll
            for (int r = 0; r < PROBS_ROWS; ++r) acc[r] = 0.0f;
            const T* krow = k + (long long)key * kv_stride + (long long)kvh * hd;
            // Four dims at a time: one 16-byte shared load per 4 FMAs (Qs rows are 16-byte aligned when
            // head_dim % 4 == 0); the FMAs keep the order d = 0, 1, 2, … of the scalar loop.
            int d = 0;
            if ((hd & 3) == 0)
                for (; d < hd; d += 4) {
                    const float k0 = to_f32(krow[d]), k1 = to_f32(krow[d + 1]);
                    const float k2 = to_f32(krow[d + 2]), k3 = to_f32(krow[d + 3]);
#pragma unroll
                    for (int r = 0; r < PROBS_ROWS; ++r) {
                        const float4 q4 = *reinterpret_cast<const float4*>(Qs + r * hd + d);
                        acc[r] += q4.x * k0;
                        acc[r] += q4.y * k1;
                        acc[r] += q4.z * k2;
                        acc[r] += q4.w * k3;
                    }
                }
            for (; d < hd; ++d) {
                const float kd = to_f32(krow[d]);
#pragma unroll
                for (int r = 0; r < PROBS_ROWS; ++r) acc[r] += Qs[r * hd + d] * kd;
            }
            const int group_k = groups[key];
            const long long pos_k = positions[key];
            double recv = 0.0;
#pragma unroll
            for (int r = 0; r < PROBS_ROWS; ++r) {
                if (r >= n_rows) break;
                const int qslot = q_start + row0 + r;
                const bool vis = slot_visible_g(qslot, key, row_group[r], group_k, isolated, window);
                const float p = vis ? expf(scale * acc[r] - row_lse[r]) : 0.0f;
                const long long out_row = row0 + r;
                if (weights) weights[sel * w_head_stride + out_row * w_row_stride + key] = from_f32<W>(p);
                if (p == 0.0f) continue;
                const long long si = (long long)sel * n_new + out_row;
                if (sink && key == 0) sink[si] = p;
                if (prev && key == qslot - 1) prev[si] = p;
                if (self_mass && key == qslot) self_mass[si] = p;
                if (row_group[r] >= 0 && group_k == row_group[r] && key != qslot) atomicAdd(&gmass[r], (double)p);
                recv += (double)p;
                if (distance) {
                    const int b = distance_bucket(row_pos[r] - pos_k);
                    if (b != cur_bucket) {
                        if (cur_bucket >= 0) atomicAdd(&hist[cur_bucket], cur_mass);
                        cur_bucket = b;
                        cur_mass = 0.0;
                    }
                    cur_mass += (double)p;
                }
            }
            recv_acc[((c0 - split_lo) / PROBS_THREADS) * PROBS_THREADS + threadIdx.x] += recv;
        }
        __syncthreads();
        if (group_mass && threadIdx.x < n_rows && gmass[threadIdx.x] != 0.0)
            atomicAdd(&group_mass[(long long)sel * n_new + row0 + threadIdx.x], (float)gmass[threadIdx.x]);
    }
    if (cur_bucket >= 0) atomicAdd(&hist[cur_bucket], cur_mass);
    __syncthreads();
    if (distance)
        for (int b = threadIdx.x; b < ATTN_DISTANCE_BUCKETS; b += blockDim.x)
            if (hist[b] != 0.0) atomicAdd(&distance[(long long)sel * ATTN_DISTANCE_BUCKETS + b], hist[b]);
    if (recv_part) {
        double* out = recv_part + ((long long)sel * gridDim.x + blockIdx.x) * n_keys;
#pragma unroll
        for (int j = 0; j < PROBS_MAX_CHUNKS; ++j) {
            const int key = split_lo + j * PROBS_THREADS + threadIdx.x;
            if (key < split_hi) out[key] = recv_acc[j * PROBS_THREADS + threadIdx.x];
        }
    }
}

/// The received sums from the per-row-group partials: one thread per (selected head, key).
__device__ void attn_probs_received(const double* __restrict__ recv_part, int row_groups, int n_sel, int n_keys,
                                    double* __restrict__ received, int received_stride) {
    const int sel = blockIdx.y;
    const int key = blockIdx.x * blockDim.x + threadIdx.x;
    if (sel >= n_sel || key >= n_keys) return;
    const double* part = recv_part + (long long)sel * row_groups * n_keys + key;
    double sum = 0.0;
    for (int x = 0; x < row_groups; ++x) sum += part[(long long)x * n_keys];
    received[(long long)sel * received_stride + key] += sum;
}

extern "C" __global__ void __launch_bounds__(PROBS_THREADS) attn_probs_received_f32(const AttnParams p) {
    attn_probs_received(p.recv_part, p.row_groups, p.n_sel, p.q_start + p.n_new, p.received, p.received_stride);
}

#define PROBS_KERNEL(T, TS, W, WS)                                                                            \
    extern "C" __global__ void __launch_bounds__(PROBS_THREADS) attn_probs_##TS##_w##WS(const AttnParams p) { \
        attn_probs<T, W>((const T*)p.q, p.q_stride, (const T*)p.k, p.kv_stride, p.lse, p.heads, p.n_sel,      \
                         p.positions, p.groups, p.isolated, p.window, p.q_start, p.n_new, p.n_heads,          \
                         p.n_kv_heads, p.head_dim, p.scale, p.split_len, (W*)p.weights, p.w_head_stride,      \
                         p.w_row_stride, p.sink, p.prev, p.self_mass, p.group_mass, p.recv_part,              \
                         p.distance);                                                                         \
    }

PROBS_KERNEL(float, f32, float, f32)
PROBS_KERNEL(float, f32, f16, f16)
PROBS_KERNEL(bf16, bf16, float, f32)
PROBS_KERNEL(bf16, bf16, f16, f16)
PROBS_KERNEL(f16, f16, float, f32)
PROBS_KERNEL(f16, f16, f16, f16)
