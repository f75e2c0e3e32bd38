#!/usr/bin/env python3
"""The HF side of scripts/bench_sweep.py: what attnscope's stats capture writes (entropy, max_weight,
argmax_slot, sink_mass, prev_mass, self_mass per query row; received sums per key slot), computed with torch
from a batch's `output_attentions` tensors, vectorised; Parquet writing; and its self-test against a plain
loop (`python scripts/bench_sweep.py --self-test`)."""

import math
import os
import tempfile
import sys

METRICS = ["entropy", "max_weight", "argmax_slot", "sink_mass", "prev_mass", "self_mass"]
ROW_GROUP_ROWS = 1 << 20  # attnscope-io's ROW_GROUP_ROWS


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------
# the HF side's statistics (torch, vectorised over the batch)

def batch_stats(attentions, lengths):
    """attentions: per layer [B, H, T, T] (right-padded batch), lengths: [B] int tensor.
    Returns (stats [B, L, H, T, 6] in METRICS order, received [B, L, H, T], qmask [B, T])."""
    import torch
    a0 = attentions[0]
    B, H, T, _ = a0.shape
    ar = torch.arange(T, device=a0.device)
    qmask = ar[None, :] < lengths[:, None]  # [B, T] valid query (and key) slots
    qm = qmask[:, None, :, None]
    per_layer_stats, per_layer_recv = [], []
    for a in attentions:
        ent = -torch.special.xlogy(a, a).sum(-1)
        mx, am = a.max(-1)
        sink = a[..., 0]
        self_ = a.diagonal(dim1=-2, dim2=-1)
        prev = torch.zeros_like(self_)
        prev[..., 1:] = a.diagonal(offset=-1, dim1=-2, dim2=-1)
        per_layer_stats.append(torch.stack([ent, mx, am.to(a.dtype), sink, prev, self_], dim=-1))
        per_layer_recv.append(torch.where(qm, a, 0.0).sum(-2))
    stats = torch.stack(per_layer_stats, dim=1)  # [B, L, H, T, 6]
    recv = torch.stack(per_layer_recv, dim=1)  # [B, L, H, T]
    return stats, recv, qmask


def stats_tables(stats, recv, qmask, lengths, seq_ids):
    """Long-format pyarrow tables (stats, received) of one batch, rows in attnscope's order:
    seq, layer, head, slot (, metric)."""
    import numpy as np
    import pyarrow as pa
    B, L, H, T, M = stats.shape
    qmask = qmask.cpu().numpy()
    stats = stats.float().cpu().numpy()
    recv = recv.float().cpu().numpy()
    lengths = lengths.cpu().numpy()
    seq_ids = np.asarray(seq_ids, dtype=np.int32)
    sel = np.broadcast_to(qmask[:, None, None, :], (B, L, H, T))
    # key columns of the selected (seq, layer, head, slot) rows
    seq_c = np.broadcast_to(seq_ids[:, None, None, None], (B, L, H, T))[sel]
    lay_c = np.broadcast_to(np.arange(L, dtype=np.int32)[None, :, None, None], (B, L, H, T))[sel]
    head_c = np.broadcast_to(np.arange(H, dtype=np.int32)[None, None, :, None], (B, L, H, T))[sel]
    slot_c = np.broadcast_to(np.arange(T, dtype=np.int32)[None, None, None, :], (B, L, H, T))[sel]
    n = seq_c.shape[0]
    metric = pa.DictionaryArray.from_arrays(np.tile(np.arange(M, dtype=np.int32), n), pa.array(METRICS))
    st = pa.table({
        "seq": np.repeat(seq_c, M), "layer": np.repeat(lay_c, M), "head": np.repeat(head_c, M),
        "slot": np.repeat(slot_c, M), "metric": metric, "value": stats[sel].reshape(-1),
    })
    visible = (lengths[:, None] - np.arange(T)[None, :]).astype(np.int32)  # L - k rows see key k
    vis_c = np.broadcast_to(visible[:, None, None, :], (B, L, H, T))[sel]
    rsum = recv[sel]
    rv = pa.table({
        "seq": seq_c, "layer": lay_c, "head": head_c, "slot": slot_c,
        "received_sum": rsum, "received_mean": (rsum / np.maximum(vis_c, 1)).astype(np.float32),
        "visible_rows": vis_c, "received_decode_sum": np.zeros(n, dtype=np.float32),
    })
    return st, rv


def write_parquet(table, path):
    import pyarrow.parquet as pq
    pq.write_table(table, path, compression="none", use_dictionary=["metric"], row_group_size=ROW_GROUP_ROWS)


def self_test():
    """The torch stats code on a tiny hand-made right-padded batch against a plain-loop numpy reference."""
    import numpy as np
    import torch
    rng = np.random.default_rng(7)
    B, H, T, NL = 3, 2, 5, 2
    lengths = np.array([5, 3, 1])
    atts = []
    for _ in range(NL):
        a = np.zeros((B, H, T, T), dtype=np.float32)
        for b in range(B):
            for h in range(H):
                for q in range(T):
                    vis = min(q, lengths[b] - 1) + 1  # padded query rows see all the valid keys (as in HF)
                    w = rng.random(vis).astype(np.float32)
                    if q == 2 and h == 1:
                        w[:] = 1.0  # a tie: argmax must be the lowest slot
                    if q == 3 and h == 0 and vis > 1:
                        w[1] = 0.0  # an exact zero weight: 0 ln 0 = 0
                    a[b, h, q, :vis] = w / w.sum()
        atts.append(a)
    stats, recv, qmask = batch_stats([torch.from_numpy(a) for a in atts], torch.from_numpy(lengths))
    seq_ids = [10, 11, 12]
    st, rv = stats_tables(stats, recv, qmask, torch.from_numpy(lengths), seq_ids)
    want_st, want_rv = [], []
    for b in range(B):
        n = lengths[b]
        for layer in range(NL):
            for h in range(H):
                p = atts[layer][b, h].astype(np.float64)
                for q in range(n):
                    row = p[q, :q + 1]
                    ent = -sum(x * math.log(x) for x in row if x > 0)
                    vals = [ent, row.max(), float(int(np.argmax(row))), row[0], row[q - 1] if q else 0.0, row[q]]
                    for m, v in zip(METRICS, vals):
                        want_st.append((seq_ids[b], layer, h, q, m, v))
                for k in range(n):
                    s = sum(p[q, k] for q in range(k, n))
                    want_rv.append((seq_ids[b], layer, h, k, s, s / (n - k), n - k, 0.0))
    got_st = list(zip(*[st.column(c).to_pylist() for c in st.column_names]))
    got_rv = list(zip(*[rv.column(c).to_pylist() for c in rv.column_names]))
    assert len(got_st) == len(want_st), (len(got_st), len(want_st))
    assert len(got_rv) == len(want_rv), (len(got_rv), len(want_rv))
    for g, w in zip(got_st, want_st):
        assert g[:5] == w[:5], (g, w)
        assert abs(g[5] - w[5]) <= 1e-6, (g, w)
    for g, w in zip(got_rv, want_rv):
        assert g[:4] == w[:4] and g[6] == w[6], (g, w)
        assert all(abs(x - y) <= 1e-6 for x, y in zip(g[4:6] + g[7:], w[4:6] + w[7:])), (g, w)
    ties = [g for g in got_st if g[1] == 0 and g[2] == 1 and g[3] == 2 and g[4] == "argmax_slot"]
    assert ties and all(g[5] == 0.0 for g in ties), ties
    with tempfile.TemporaryDirectory() as d:
        import pyarrow.parquet as pq
        write_parquet(st, os.path.join(d, "s.parquet"))
        back = pq.read_table(os.path.join(d, "s.parquet"))
        assert back.num_rows == st.num_rows and back.column("metric").to_pylist() == st.column("metric").to_pylist()
    print(f"self-test ok: {len(want_st)} stats rows and {len(want_rv)} received rows match the loop reference")
    return 0


# ----------------------------------------------------------------------------------------------------------
# the inputs

