// sampling.cu: the device half of next-token selection over rows of f32 logits.
// CPU twin: src/sampling.rs (`argmax` and `Sampler::sample`).
//
// The random draw stays on the host (the seeded xoshiro256** stream of `Sampler` must be reproduced
// exactly), so the device only reduces a [rows, vocab] logit matrix to what the host needs:
//
// argmax_f32(logits, out, rows, n)
//   logits [rows, n] f32, out [rows] uint32. Index of the first maximum; NaN never wins; ties go to the
//   lowest index (torch.argmax); a row that is empty or all NaN gives 0 — exactly `sampling::argmax`.
//   Launch: grid (rows), block 256 (a multiple of 32, at most 1024).
//
// softmax_stats_f32(logits, max_out, sum_out, rows, n, inv_temperature)
//   For each row over the finite logits only: max_out[r] = max(x·inv_t) (f64), sum_out[r] = Σ exp(x·inv_t − max)
//   (f64), which is the normaliser top-p needs when no top-k cut applies. A row without finite logits gives
//   max −inf and sum 0 (the host then falls back to argmax, as the CPU does).
//   Launch: grid (rows), block 256.
//
// topk_f32(logits, idx_out, val_out, rows, n, k)
//   The k largest finite logits of each row in the order of `by_value_desc` (value descending, ties by
//   ascending index): idx_out/val_out [rows, k]; entries past the number of finite logits get idx 0xffffffff
//   and val −inf. Selection is k rounds of a block-wide arg-max below the previous pick, so it costs k
//   passes over the row: meant for the usual k ≤ 256 (a 128k-vocab row stays in L2). For top-p without
//   top-k the host asks for a growing k until the kept mass reaches p, or copies the row.
//   Launch: grid (rows), block 512; static shared memory 4 KiB.
//
// Scaling by the temperature is monotone, so ordering raw logits equals ordering the scaled ones the CPU sorts.

/// (value, index) pairs ordered as `by_value_desc`: a beats b when a.v > b.v, or a.v == b.v and a.i < b.i.
__device__ __forceinline__ bool pair_better(float av, unsigned int ai, float bv, unsigned int bi) {
    return av > bv || (av == bv && ai < bi);
}

/// Block-wide best pair; every thread gets the result. `sv`/`si` are shared arrays of 32 entries.
__device__ void block_best(float& v, unsigned int& i, float* sv, unsigned int* si) {
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, v, o);
        const unsigned int oi = __shfl_xor_sync(0xffffffffu, i, o);
        if (pair_better(ov, oi, v, i)) {
            v = ov;
            i = oi;
        }
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) {
        sv[warp] = v;
        si[warp] = i;
    }
    __syncthreads();
    v = sv[0];
    i = si[0];
    for (int w = 1; w < n_warps; ++w)
        if (pair_better(sv[w], si[w], v, i)) {
            v = sv[w];
            i = si[w];
        }
}

extern "C" __global__ void argmax_f32(const float* logits, unsigned int* out, int rows, int n) {
    __shared__ float sv[32];
    __shared__ unsigned int si[32];
    const int r = blockIdx.x;
    if (r >= rows) return;
    const float* x = logits + (long long)r * n;
    // NaN is replaced by −inf with the largest index, so it never beats a real value; −inf entries keep their
    // index, so an all −inf row still returns its first index like the CPU.
    float best = ATTN_NEG_INF;
    unsigned int best_i = 0xffffffffu;
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
        const float v = x[c];
        if (v != v) continue;
        if (pair_better(v, (unsigned int)c, best, best_i)) {
            best = v;
            best_i = (unsigned int)c;
        }
    }
    block_best(best, best_i, sv, si);
    if (threadIdx.x == 0) out[r] = best_i == 0xffffffffu ? 0u : best_i;
}

extern "C" __global__ void softmax_stats_f32(const float* logits, double* max_out, double* sum_out, int rows, int n,
                                             float inv_temperature) {
    __shared__ double sd[32];
    const int r = blockIdx.x;
    if (r >= rows) return;
    const float* x = logits + (long long)r * n;
    const double inv_t = (double)inv_temperature;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    double m = -1.0 / 0.0;
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
        const float v = x[c];
        if (v - v == 0.0f) m = fmax(m, (double)v * inv_t);  // finite only
    }
    for (int o = 16; o > 0; o >>= 1) m = fmax(m, __shfl_xor_sync(0xffffffffu, m, o));
    if (lane == 0) sd[warp] = m;
    __syncthreads();
    m = sd[0];
    for (int w = 1; w < n_warps; ++w) m = fmax(m, sd[w]);
    __syncthreads();
    double s = 0.0;
    if (m > -1.0 / 0.0)
        for (int c = threadIdx.x; c < n; c += blockDim.x) {
            const float v = x[c];
            if (v - v == 0.0f) s += exp((double)v * inv_t - m);
        }
    s = warp_sum_d(s);
    if (lane == 0) sd[warp] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        double total = 0.0;
        for (int w = 0; w < n_warps; ++w) total += sd[w];
        max_out[r] = m;
        sum_out[r] = total;
    }
}

extern "C" __global__ void topk_f32(const float* logits, unsigned int* idx_out, float* val_out, int rows, int n, int k) {
    __shared__ float sv[32];
    __shared__ unsigned int si[32];
    const int r = blockIdx.x;
    if (r >= rows) return;
    const float* x = logits + (long long)r * n;
    // The previous pick; the next pick is the best pair strictly worse than it.
    float prev_v = ATTN_POS_INF;
    unsigned int prev_i = 0u;
    bool first = true;
    for (int j = 0; j < k; ++j) {
        float best = ATTN_NEG_INF;
        unsigned int best_i = 0xffffffffu;
        for (int c = threadIdx.x; c < n; c += blockDim.x) {
            const float v = x[c];
            if (!(v - v == 0.0f)) continue;  // NaN and ±inf are never candidates
            if (!first && !pair_better(prev_v, prev_i, v, (unsigned int)c)) continue;
            if (pair_better(v, (unsigned int)c, best, best_i)) {
                best = v;
                best_i = (unsigned int)c;
            }
        }
        block_best(best, best_i, sv, si);
        if (threadIdx.x == 0) {
            idx_out[(long long)r * k + j] = best_i;
            val_out[(long long)r * k + j] = best_i == 0xffffffffu ? ATTN_NEG_INF : best;
        }
        if (best_i == 0xffffffffu) {
            // Fewer finite logits than k: pad the rest.
            for (int jj = j + 1 + threadIdx.x; jj < k; jj += blockDim.x) {
                idx_out[(long long)r * k + jj] = 0xffffffffu;
                val_out[(long long)r * k + jj] = ATTN_NEG_INF;
            }
            return;
        }
        prev_v = best;
        prev_i = best_i;
        first = false;
    }
}
