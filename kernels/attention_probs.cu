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
// attn_probs_<T>_w<W>(q, q_stride, k, kv_stride, lse, heads, n_sel, positions, groups, isolated, window,
//                      q_start, n_new, n_heads, n_kv_heads, head_dim, scale, key_split,
//                      weights, w_head_stride, w_row_stride, sink, prev, self_mass, group_mass,
//                      received, received_stride, distance)
//   T ∈ {f32, bf16, f16} (q, k as in attention_prefill.cu), W ∈ {f32, f16} (weights output).
//   lse [n_heads, n_new] f32 from the first pass; heads [n_sel] int32: the query heads to capture
//   (output index s = blockIdx.y ↔ query head heads[s]); positions [n_keys] int64; groups [n_keys] int32.
//   Outputs, each optional (null = not computed):
//     weights      W, row i of selected head s at weights + s·w_head_stride + i·w_row_stride, columns
//                  0..n_keys−1 (n_keys = q_start + n_new), zeros where hidden. Point it at row q_start of a
//                  [cap, cap] buffer to fill the CPU's layout.
//     sink, prev, self_mass, group_mass   f32 [n_sel, n_new]: p(q, 0), p(q, q−1), p(q, q), Σ p over the other
//                  members of q's group (0 when q has no group; the host knows which rows have one).
//                  THE HOST MUST ZERO THEM before the launch: a block writes only the keys it covers, and
//                  group_mass is accumulated with atomicAdd.
//     received     f64 [n_sel, received_stride]: received[s, k] += Σ_q p(q, k) (atomicAdd; accumulates
//                  across launches like the CPU's running sum over decode steps).
//     distance     f64 [n_sel, 65]: distance[s, b] += Σ p over pairs with distance_bucket(pos[q] − pos[k]) = b.
//   Launch: grid (ceil(n_new / 16), n_sel, ceil(n_keys / key_split)), block 128; each block takes 16 query
//   rows × the keys [z·key_split, (z+1)·key_split) (key_split a multiple of 128; use n_keys rounded up for
//   prefill, and e.g. 1024 for decode rows against a long cache so the cache is spread over many blocks).
//   Thread j of the block owns key chunk_start + j of each 128-key chunk and computes its 16 scores with f32
//   dot products (q rows staged in shared memory). Dynamic shared memory 16·head_dim·4 bytes; static
//   shared memory 65 + 16 doubles.

#define PROBS_ROWS 16
#define PROBS_THREADS 128

template <typename T, typename W>
__device__ void attn_probs(const T* __restrict__ q, int q_stride, const T* __restrict__ k, int kv_stride,
                           const float* __restrict__ lse, const int* __restrict__ heads, int n_sel,
                           const long long* __restrict__ positions, const int* __restrict__ groups, int isolated,
                           int window, int q_start, int n_new, int n_heads, int n_kv_heads, int head_dim,
                           float scale, int key_split, W* __restrict__ weights, long long w_head_stride,
                           long long w_row_stride, float* __restrict__ sink, float* __restrict__ prev,
                           float* __restrict__ self_mass, float* __restrict__ group_mass,
                           double* __restrict__ received, int received_stride, double* __restrict__ distance) {
    extern __shared__ float Qs[];  // [PROBS_ROWS][head_dim]
    __shared__ double hist[ATTN_DISTANCE_BUCKETS];
    __shared__ double gmass[PROBS_ROWS];

    const int hd = head_dim;
    const int sel = blockIdx.y;
    if (sel >= n_sel) return;
    const int h = heads[sel];
    const int kvh = h / (n_heads / n_kv_heads);
    const int row0 = blockIdx.x * PROBS_ROWS;
    const int n_rows = min(PROBS_ROWS, n_new - row0);
    if (n_rows <= 0) return;
    const int n_keys = q_start + n_new;

    for (int idx = threadIdx.x; idx < PROBS_ROWS * hd; idx += blockDim.x) {
        const int r = idx / hd, d = idx - r * hd;
        Qs[idx] = r < n_rows ? to_f32(q[(long long)(row0 + r) * q_stride + (long long)h * hd + d]) : 0.0f;
    }
    for (int b = threadIdx.x; b < ATTN_DISTANCE_BUCKETS; b += blockDim.x) hist[b] = 0.0;
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

    // Keys this block covers: its split, cut to what its rows can see unless weights need every column.
    int key_lo = blockIdx.z * key_split;
    int key_hi = min(n_keys, key_lo + key_split);
    if (!weights) {
        const int last_slot = q_start + row0 + n_rows - 1;
        key_hi = min(key_hi, last_slot + 1);
        if (window > 0) key_lo = max(key_lo, q_start + row0 - window + 1);
    }
    // Walk whole 128-key chunks so that every thread reaches the same barriers.
    const int chunk_lo = (key_lo / PROBS_THREADS) * PROBS_THREADS;

    int cur_bucket = -1;  // run-length cache of this thread's distance mass (few bucket changes per thread)
    double cur_mass = 0.0;

    for (int c0 = chunk_lo; c0 < key_hi; c0 += PROBS_THREADS) {
        const int key = c0 + threadIdx.x;
        if (key < key_lo || key >= key_hi) continue;
        float acc[PROBS_ROWS];
#pragma unroll
        for (int r = 0; r < PROBS_ROWS; ++r) acc[r] = 0.0f;
        const T* krow = k + (long long)key * kv_stride + (long long)kvh * hd;
        for (int d = 0; d < hd; ++d) {
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
        if (received && recv != 0.0) atomicAdd(&received[(long long)sel * received_stride + key], recv);
    }
    if (cur_bucket >= 0) atomicAdd(&hist[cur_bucket], cur_mass);
    __syncthreads();
    if (distance)
        for (int b = threadIdx.x; b < ATTN_DISTANCE_BUCKETS; b += blockDim.x)
            if (hist[b] != 0.0) atomicAdd(&distance[(long long)sel * ATTN_DISTANCE_BUCKETS + b], hist[b]);
    if (group_mass && threadIdx.x < n_rows && gmass[threadIdx.x] != 0.0)
        atomicAdd(&group_mass[(long long)sel * n_new + row0 + threadIdx.x], (float)gmass[threadIdx.x]);
}

#define PROBS_KERNEL(T, TS, W, WS)                                                                            \
    extern "C" __global__ void __launch_bounds__(PROBS_THREADS) attn_probs_##TS##_w##WS(const AttnParams p) { \
        attn_probs<T, W>((const T*)p.q, p.q_stride, (const T*)p.k, p.kv_stride, p.lse, p.heads, p.n_sel,      \
                         p.positions, p.groups, p.isolated, p.window, p.q_start, p.n_new, p.n_heads,          \
                         p.n_kv_heads, p.head_dim, p.scale, p.split_len, (W*)p.weights, p.w_head_stride,      \
                         p.w_row_stride, p.sink, p.prev, p.self_mass, p.group_mass, p.received,               \
                         p.received_stride, p.distance);                                                      \
    }

PROBS_KERNEL(float, f32, float, f32)
PROBS_KERNEL(float, f32, f16, f16)
PROBS_KERNEL(bf16, bf16, float, f32)
PROBS_KERNEL(bf16, bf16, f16, f16)
PROBS_KERNEL(f16, f16, float, f32)
PROBS_KERNEL(f16, f16, f16, f16)
