#!/usr/bin/env python3
"""A CPU model of the index logic of kernels/attention_prefill_fa2.cu (no GPU, no CUDA, plain Python).

It checks two things the first GPU run cannot afford to get wrong, on the kernel's formulas copied by hand
(keep them in step with the kernel):
  1. fragments: the per-lane ldmatrix row addresses of K (non-transposed) and V (.trans), the Q fragment
     loads and the S → P reuse, run through the PTX ISA's definitions of ldmatrix.m8n8.x4[.trans] and
     mma.m16n8k16 (modelled here), give S = Q·Kᵀ and O = P·V exactly, and every ldmatrix phase (8 rows)
     hits 8 distinct 16-byte bank groups;
  2. tiles: for random shapes (n_new, q_start, window, isolated, groups), the visited tiles are exactly
     [nb, ne), every key outside them is hidden from every row, and every (row, key) of a FULL tile is
     visible under `slot_visible_g`.
It says nothing about PTX syntax or semantics beyond the model (ptxas checks syntax; a GPU checks the rest:
tests/gpu_attention.rs).  usage: scripts/check_fa2_model.py
"""
import random


def matmul(a, b):
    return [[sum(a[i][k] * b[k][j] for k in range(len(b))) for j in range(len(b[0]))] for i in range(len(a))]


def ldmatrix_x4(smem, lane_off, trans):
    """PTX ldmatrix.m8n8.x4.b16: lanes 8i..8i+7 address rows 0..7 of matrix i; register i of lane 4g+t
    holds (row g, cols 2t, 2t+1), or with .trans (rows 2t, 2t+1, col g)."""
    regs = [[None] * 4 for _ in range(32)]
    for i in range(4):
        m = [smem[lane_off[8 * i + r]: lane_off[8 * i + r] + 8] for r in range(8)]
        for lane in range(32):
            g, t = lane // 4, lane % 4
            regs[lane][i] = (m[2 * t][g], m[2 * t + 1][g]) if trans else (m[g][2 * t], m[g][2 * t + 1])
    return regs


def mma16816(a, b, c):
    """PTX mma.m16n8k16.row.col: A a0 (g, 2t..), a1 (g+8, 2t..), a2 (g, 2t+8..), a3 (g+8, 2t+8..);
    B b0 (k 2t.., n g), b1 (k 2t+8.., n g); C c0, c1 (g, 2t, 2t+1), c2, c3 (g+8, 2t, 2t+1)."""
    A = [[0.0] * 16 for _ in range(16)]
    B = [[0.0] * 8 for _ in range(16)]
    for lane in range(32):
        g, t = lane // 4, lane % 4
        for e in range(2):
            A[g][2 * t + e], A[g + 8][2 * t + e] = a[lane][0][e], a[lane][1][e]
            A[g][2 * t + 8 + e], A[g + 8][2 * t + 8 + e] = a[lane][2][e], a[lane][3][e]
            B[2 * t + e][g], B[2 * t + 8 + e][g] = b[lane][0][e], b[lane][1][e]
    C = matmul(A, B)
    out = []
    for lane in range(32):
        g, t = lane // 4, lane % 4
        cc = c[lane]
        out.append([cc[0] + C[g][2 * t], cc[1] + C[g][2 * t + 1], cc[2] + C[g + 8][2 * t], cc[3] + C[g + 8][2 * t + 1]])
    return out


def check_fragments(hd, rng):
    bk = 64 if hd <= 80 else 32
    pad = hd + 8
    nk, ns, no = hd // 16, bk // 8, hd // 8
    rnd = lambda r, c: [[rng.randint(-8, 8) for _ in range(c)] for _ in range(r)]  # exact in float
    Q, K, V = rnd(16, hd), rnd(bk, hd), rnd(bk, hd)
    ks, vs = [0] * (bk * pad), [0] * (bk * pad)
    for r in range(bk):
        ks[r * pad: r * pad + hd], vs[r * pad: r * pad + hd] = K[r], V[r]
    qf = [[[(Q[lane // 4 + 8 * (r & 1)][kk * 16 + 2 * (lane % 4) + (r >> 1) * 8],
             Q[lane // 4 + 8 * (r & 1)][kk * 16 + 2 * (lane % 4) + (r >> 1) * 8 + 1]) for r in range(4)]
           for kk in range(nk)] for lane in range(32)]
    k_lane = [((l & 7) + 8 * (l >> 4)) * pad + 8 * ((l >> 3) & 1) for l in range(32)]
    v_lane = [((l & 7) + 8 * ((l >> 3) & 1)) * pad + 8 * (l >> 4) for l in range(32)]
    s = [[[0.0] * 4 for _ in range(32)] for _ in range(ns)]
    for kk in range(nk):
        for j in range(0, ns, 2):
            b = ldmatrix_x4(ks, [k_lane[l] + j * 8 * pad + kk * 16 for l in range(32)], False)
            a = [qf[l][kk] for l in range(32)]
            s[j] = mma16816(a, [(b[l][0], b[l][1]) for l in range(32)], s[j])
            s[j + 1] = mma16816(a, [(b[l][2], b[l][3]) for l in range(32)], s[j + 1])
    S = [[0.0] * bk for _ in range(16)]
    for j in range(ns):
        for lane in range(32):
            for r in range(4):
                S[lane // 4 + 8 * (r >> 1)][j * 8 + 2 * (lane % 4) + (r & 1)] = s[j][lane][r]
    assert S == matmul(Q, [list(col) for col in zip(*K)]), f"HD {hd}: S != Q·Kᵀ"
    o = [[[0.0] * 4 for _ in range(32)] for _ in range(no)]
    for kk in range(bk // 16):
        pa = [((s[2 * kk][l][0], s[2 * kk][l][1]), (s[2 * kk][l][2], s[2 * kk][l][3]),
               (s[2 * kk + 1][l][0], s[2 * kk + 1][l][1]), (s[2 * kk + 1][l][2], s[2 * kk + 1][l][3]))
              for l in range(32)]
        for n in range(0, no, 2):
            b = ldmatrix_x4(vs, [v_lane[l] + kk * 16 * pad + n * 8 for l in range(32)], True)
            o[n] = mma16816(pa, [(b[l][0], b[l][1]) for l in range(32)], o[n])
            o[n + 1] = mma16816(pa, [(b[l][2], b[l][3]) for l in range(32)], o[n + 1])
    O = [[0.0] * hd for _ in range(16)]
    for n in range(no):
        for lane in range(32):
            for x in range(2):
                d = n * 8 + 2 * (lane % 4)
                O[lane // 4 + 8 * x][d], O[lane // 4 + 8 * x][d + 1] = o[n][lane][2 * x], o[n][lane][2 * x + 1]
    assert O == matmul(S, V), f"HD {hd}: O != P·V"
    for offs in (k_lane, v_lane):
        for i in range(4):
            assert len({(offs[8 * i + r] * 2 // 16) % 8 for r in range(8)}) == 8, f"HD {hd}: bank conflict"


def visible(q, k, gq, gk, iso, win):
    """slot_visible_g of kernels/common.cuh."""
    if k > q or (win > 0 and q - k >= win):
        return False
    return not (iso and k != q and gq >= 0 and gk == gq)


def check_tiles(trials, rng):
    full_tiles = all_tiles = 0
    for _ in range(trials):
        bk, bq = rng.choice([32, 64]), 64
        n_new = rng.randint(1, 300)
        q_start = rng.choice([0, 0, rng.randint(0, 200)])
        n_keys = q_start + n_new
        win = rng.choice([0, 0, rng.randint(1, 150)])
        iso = rng.randint(0, 1)
        mode = rng.randint(0, 3)
        if mode == 0:
            groups = [-1] * n_keys
        elif mode == 1:
            groups = [-1] * n_keys
            s0 = rng.randint(0, n_keys - 1)
            for i in range(s0, min(n_keys, s0 + rng.randint(1, 40))):
                groups[i] = rng.randint(0, 2)
        elif mode == 2:
            groups = [rng.randint(-1, 3) for _ in range(n_keys)]
        else:  # the pattern of tests/gpu_common/attention.rs `slots`
            groups = [i // 7 if 3 <= i % 7 <= 5 else -1 for i in range(n_keys)]
        for bx in range((n_new + bq - 1) // bq):
            # --- the kernel's integer logic ---
            tile_row0 = bx * bq
            rows = [r for r in range(tile_row0, tile_row0 + bq) if r < n_new]
            last_row = min(n_new - 1, tile_row0 + bq - 1)
            qlo, qhi = q_start + tile_row0, q_start + last_row
            key_end = qhi + 1
            key_begin = max(0, qlo - win + 1) if win > 0 else 0
            nb, ne = key_begin // bk, (key_end + bk - 1) // bk
            full_lo, full_hi = nb, min(ne, (qlo + 1) // bk)
            if win > 0:
                full_lo = max(full_lo, (max(0, qhi - win + 1) + bk - 1) // bk)
            gs = [groups[q_start + r] for r in rows if iso and groups[q_start + r] >= 0]
            first = 0x7FFFFFFF
            if gs:
                gmin, gmax = min(gs), max(gs)
                first = next((k for k in range(nb * bk, key_end) if gmin <= groups[k] <= gmax), first)
            full_hi = min(full_hi, first // bk)
            if full_lo >= full_hi:
                full_lo = full_hi = ne
            n_full, n_front, n_tiles = full_hi - full_lo, full_lo - nb, ne - nb

            def tile_of(i):
                j = i - n_full
                return full_lo + i if i < n_full else (nb + j if j < n_front else full_hi + (j - n_front))

            # --- checks ---
            visited = [tile_of(i) for i in range(n_tiles)]
            assert sorted(visited) == list(range(nb, ne)), (visited, nb, ne)
            full_tiles, all_tiles = full_tiles + n_full, all_tiles + n_tiles
            for r in rows:
                q = q_start + r
                for i, n in enumerate(visited[:n_full]):
                    for k in range(n * bk, n * bk + bk):
                        assert k < n_keys and visible(q, k, groups[q], groups[k], iso, win), ("FULL", q, k)
                for k in range(n_keys):
                    if not nb * bk <= k < ne * bk:
                        assert not visible(q, k, groups[q], groups[k], iso, win), ("skipped", q, k)
    return full_tiles, all_tiles


def main():
    rng = random.Random(1)
    for hd in (32, 64, 80, 96, 128):
        check_fragments(hd, rng)
    print("fragments: S = Q·Kᵀ and O = P·V exact, ldmatrix phases conflict-free, HD 32 64 80 96 128")
    full, total = check_tiles(2000, rng)
    print(f"tiles: 2000 random shapes, {full} of {total} visited tiles FULL, no violation")


if __name__ == "__main__":
    main()
