#!/usr/bin/env python3
"""`attnscope sweep` against a careful HF transformers loop: N prompts (default 1,000) of 64–128 tokens through
the random-weight llama-100m shape (hidden 768, 12 layers, 12 query / 4 kv heads, vocab 32000) with stats
capture, both engines in the same run, on one machine, with the same threads.

Run from the repository root in the venv of scripts/requirements-bench.txt (+ pyarrow), after
`cargo build --release --bin attnscope`:

    python scripts/bench_sweep.py --threads 2 --rounds 2 --json sweep.json > table.md
    python scripts/bench_sweep.py --tune 100 --rounds 2   # tune configs on 100 prompts, rounds with the best
    python scripts/bench_sweep.py --quick          # 100 prompts, 1 round: a smoke test
    python scripts/bench_sweep.py --self-test      # the HF stats code vs a loop reference (no model, fast)

What is generated once (in a temporary directory, removed unless --keep):
  - the model: scripts/bench_hf_model.py's llama-100m shape with seeded random weights, written with
    save_pretrained (config.json + model.safetensors); both engines load this same directory;
  - the prompts: a .jsonl of N rows {"token_ids": [...], "length": L}, L uniform in [64, 128] and the ids
    uniform in [0, vocab), seeded; no tokenizer on either side.

What each round times (rounds interleave: attnscope, then HF, then attnscope, then HF, ...):
  attnscope: the whole command `attnscope sweep SPEC.toml --out DIR --threads N --max-batch-tokens K` for
    each K of --max-batch-tokens, wall clock, process start and model load included; the figure "excl. load"
    subtracts the first unit's manifest timings.load_seconds. It commits one run directory per prompt
    (units/<id>/: stats / received / distance / tokens Parquet, manifest.json, unit.json); the units'
    unit.json (prefill_seconds / batch_units, write_seconds) split the time into prefill and writing.
  HF: model load (AutoModelForCausalLM.from_pretrained, f32, attn_implementation="eager") timed apart, then
    for each batch size B of --hf-batch-sizes: prompts sorted by length, batches of B, right padding +
    attention_mask, torch.inference_mode(), model(ids, attention_mask=mask, output_attentions=True,
    use_cache=False, logits_to_keep=1), then on the batch's attention tensors, vectorised in torch, what
    attnscope's stats capture keeps (crates/attnscope-core/src/capture/stats.rs, attnscope-io tables.rs):
      stats (long: seq, layer, head, slot, metric, value) per (layer, head, valid query row q):
        entropy = -Σ_k p ln p (nats), max_weight, argmax_slot (lowest slot on ties), sink_mass = p[0],
        prev_mass = p[q-1] (0 at q = 0), self_mass = p[q];
        group_mass is not written: plain prompts have no groups, and attnscope writes no group_mass row then;
      received (seq, layer, head, slot, received_sum, received_mean, visible_rows, received_decode_sum) per key
        slot k: Σ over the valid query rows of p[q, k], its mean over the L - k rows that see k, and 0 for
        decode (max_new_tokens = 0);
    and writes both as uncompressed Parquet with pyarrow (one stats and one received file per batch,
    dictionary-encoded metric column, as attnscope writes them).
    The HF loop does NOT compute attnscope's distance table (mass by log2 position-distance bucket) nor its
    tokens table, manifest, or the finite checks; attnscope does all of these, so the comparison leans in
    HF's favour.
Before timing, the first round's outputs of both are compared (stats and received of the first prompts).
Prints a Markdown table (stdout), progress on stderr; --json FILE keeps the raw figures.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
REPO = os.path.dirname(HERE)

from bench_sweep_stats import METRICS, batch_stats, log, self_test, stats_tables, write_parquet  # noqa: E402

def make_prompts(path, n, lo, hi, vocab, seed):
    import numpy as np
    rng = np.random.default_rng(seed)
    lengths = rng.integers(lo, hi + 1, size=n)
    prompts = []
    with open(path, "w") as f:
        for L in lengths:
            ids = rng.integers(0, vocab, size=int(L)).tolist()
            prompts.append(ids)
            f.write(json.dumps({"token_ids": ids, "length": int(L)}) + "\n")
    return prompts


def make_model(path, shape, seed):
    sys.path.insert(0, HERE)
    import torch
    import bench_hf_model as bhm
    cfg = bhm.load_config(shape)
    model = bhm.build_model(cfg, torch.float32, torch.device("cpu"), seed)
    model.save_pretrained(path, safe_serialization=True)
    total, non_emb, _ = bhm.count_params(model)
    del model
    return cfg, total, non_emb


def write_spec(path, model_dir, prompts_path, device, seed):
    # dtype f32 on both devices: the HF loop is f32 (attnscope's auto would pick bf16 on a GPU)
    dev = f'device = "{device}"\ndtype = "f32"\n'
    with open(path, "w") as f:
        f.write(f"""seed = {seed}

[[models]]
name = "llama-100m"
path = {json.dumps(model_dir)}
{dev}
[[prompts]]
name = "bench"
path = {json.dumps(prompts_path)}

[[variants]]
name = "plain"

[capture]
kinds = "stats"

[generation]
max_new_tokens = 0
""")


# ----------------------------------------------------------------------------------------------------------
# one timed pass per engine

def run_attnscope(args, spec, out_dir, mbt):
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    cmd = [args.attnscope_bin, "sweep", spec, "--out", out_dir, "--threads", str(args.threads)]
    if mbt:
        cmd += ["--max-batch-tokens", str(mbt)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} exited {p.returncode}:\n{p.stderr[-4000:]}")
    return dict(wall_s=wall, cmd=" ".join(cmd), **read_units(out_dir))


def read_units(out_dir):
    """What the committed units say (untimed): one unit per prompt row, units/<id>/{unit,manifest}.json.
    load_s: the first unit's manifest timings.load_seconds (one model, loaded once per command);
    prefill_s: Σ of unit.json prefill_seconds over distinct values: unit.json documents it as the batch's
    prefill wall time shared by its units (bit-identical within a batch), while the sweep of this commit still
    runs a batch's sequences one after another (exec.rs: "until run_batch lands") and records each its own;
    counting each distinct value once is right in both cases; write_s: Σ of unit.json write_seconds (each
    unit's run directory: Parquet, tokens, manifest)."""
    units_dir = os.path.join(out_dir, "units")
    units = sorted(os.listdir(units_dir)) if os.path.isdir(units_dir) else []
    load = write = 0.0
    sizes, batches, index, prefills = 0, 0, {}, set()
    for j, u in enumerate(units):
        d = os.path.join(units_dir, u)
        if j == 0:
            with open(os.path.join(d, "manifest.json")) as f:
                load = float(json.load(f).get("timings", {}).get("load_seconds", 0.0))
        with open(os.path.join(d, "unit.json")) as f:
            rec = json.load(f)
        index[u] = rec["index"]
        bu = max(int(rec.get("batch_units", 1)), 1)
        prefills.add(float(rec.get("prefill_seconds", 0.0)))
        write += float(rec.get("write_seconds", 0.0))
        batches += 1.0 / bu
        for root, _, files in os.walk(d):
            sizes += sum(os.path.getsize(os.path.join(root, x)) for x in files)
    prefill = sum(prefills)
    return dict(units=len(units), load_s=load, prefill_s=prefill, write_s=write, batches=round(batches),
                bytes=sizes, index=index)


def hf_load(args, model_dir, device):
    import torch
    from transformers import AutoModelForCausalLM
    sync(device)
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    model = model.to(device).eval()
    sync(device)
    return model, time.perf_counter() - t0


def sync(device):
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_hf(model, prompts, bs, device, out_dir, pad_id=0):
    """One timed pass of the careful HF loop; returns the seconds and bytes written."""
    import torch
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    n_layers = model.config.num_hidden_layers
    sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for bi in range(0, len(order), bs):
            idx = order[bi:bi + bs]
            T = max(len(prompts[i]) for i in idx)
            ids = torch.full((len(idx), T), pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), T), dtype=torch.long)
            for r, i in enumerate(idx):
                ids[r, :len(prompts[i])] = torch.tensor(prompts[i])
                mask[r, :len(prompts[i])] = 1
            lengths = mask.sum(1)
            ids, mask, lengths = ids.to(device), mask.to(device), lengths.to(device)
            out = model(input_ids=ids, attention_mask=mask, output_attentions=True, use_cache=False,
                        logits_to_keep=1)
            atts = out.attentions
            assert atts is not None and len(atts) == n_layers and atts[0].shape[-1] == T, "no attentions"
            stats, recv, qmask = batch_stats(atts, lengths)
            st, rv = stats_tables(stats, recv, qmask, lengths, idx)
            write_parquet(st, os.path.join(out_dir, f"stats-{bi // bs:05d}.parquet"))
            write_parquet(rv, os.path.join(out_dir, f"received-{bi // bs:05d}.parquet"))
            del out, atts, stats, recv
    sync(device)
    dt = time.perf_counter() - t0
    size = sum(os.path.getsize(os.path.join(out_dir, x)) for x in os.listdir(out_dir))
    return dt, size


def tune_configs(args, work, prompts, mbts, bss, device):
    """Every config once on the first args.tune prompts (their own spec and prompts file)."""
    sub = prompts[:args.tune]
    path = os.path.join(work, "tune-prompts.jsonl")
    with open(path, "w") as f:
        for ids in sub:
            f.write(json.dumps({"token_ids": ids, "length": len(ids)}) + "\n")
    spec = os.path.join(work, "tune.toml")
    write_spec(spec, os.path.join(work, "model"), path, args.device, args.seed)
    n = len(sub)
    out = dict(n=n, tokens=sum(map(len, sub)), attnscope={}, hf={})
    for m in mbts:
        r = run_attnscope(args, spec, os.path.join(work, "tune-as"), m)
        out["attnscope"][m] = dict(wall_s=r["wall_s"], load_s=r["load_s"], pps=n / r["wall_s"],
                                   pps_excl_load=n / max(r["wall_s"] - r["load_s"], 1e-9))
        log(f"tune attnscope --max-batch-tokens {m}: {out['attnscope'][m]['pps']:.2f} prompts/s "
            f"({out['attnscope'][m]['pps_excl_load']:.2f} excl. load)")
    model, load_s = hf_load(args, os.path.join(work, "model"), device)
    for b in bss:
        dt, _ = run_hf(model, sub, b, device, os.path.join(work, "tune-hf"))
        out["hf"][b] = dict(loop_s=dt, load_s=load_s, pps=n / dt, pps_incl_load=n / (dt + load_s))
        log(f"tune HF batch {b}: {n / dt:.2f} prompts/s")
    del model
    shutil.rmtree(os.path.join(work, "tune-as"), ignore_errors=True)
    shutil.rmtree(os.path.join(work, "tune-hf"), ignore_errors=True)
    return out


# ----------------------------------------------------------------------------------------------------------
# agreement of the two outputs (untimed)

def compare_outputs(as_dir, hf_dir, n_seqs):
    """Max |Δ| per metric between attnscope's stats / received and the HF loop's, on seqs < n_seqs."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    def load(paths, value_cols):
        t = ds.dataset(paths, format="parquet").to_table(filter=pc.field("seq") < n_seqs)
        if "metric" in t.column_names:
            t = t.set_column(t.column_names.index("metric"), "metric", pc.cast(t.column("metric"), "string"))
        keys = [c for c in ["seq", "layer", "head", "slot", "metric"] if c in t.column_names]
        t = t.sort_by([(k, "ascending") for k in keys])
        return t, keys

    import pyarrow as pa
    import pyarrow.parquet as pq
    units = os.path.join(as_dir, "units")
    index = read_units(as_dir)["index"]
    chosen = sorted((i, u) for u, i in index.items() if i < n_seqs)
    res = {}
    for kind, cols in [("stats", ["value"]), ("received", ["received_sum", "received_mean"])]:
        parts = []
        for i, u in chosen:  # each unit is one sequence (seq 0 of its run directory): seq := its row index
            t = pq.read_table(os.path.join(units, u, f"{kind}.parquet"))
            t = t.set_column(t.column_names.index("seq"), "seq", pa.array(np.full(t.num_rows, i, np.int32)))
            parts.append(t)
        tmp = os.path.join(as_dir, f"_check-{kind}.parquet")
        pq.write_table(pa.concat_tables(parts), tmp)
        h_paths = sorted(os.path.join(hf_dir, x) for x in os.listdir(hf_dir) if x.startswith(kind + "-"))
        a, keys = load([tmp], cols)
        os.remove(tmp)
        h, _ = load(h_paths, cols)
        if a.num_rows != h.num_rows:
            res[kind] = f"row counts differ: attnscope {a.num_rows}, HF {h.num_rows}"
            continue
        bad = [k for k in keys if not a.column(k).equals(h.column(k))]
        if bad:
            res[kind] = f"key column(s) {bad} differ"
        else:
            if kind == "stats":
                m = np.array(a.column("metric").to_pylist())
                d = np.abs(a.column("value").to_numpy() - h.column("value").to_numpy())
                res[kind] = {name: float(d[m == name].max()) for name in METRICS if name != "argmax_slot"}
                res[kind]["argmax_slot_mismatches"] = int((d[m == "argmax_slot"] > 0).sum())
                res[kind]["rows"] = a.num_rows
            else:
                res[kind] = {c: float(np.abs(a.column(c).to_numpy() - h.column(c).to_numpy()).max())
                             for c in cols}
    return res


# ----------------------------------------------------------------------------------------------------------

def fmt(x, nd=1):
    return f"{x:.{nd}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=1000)
    ap.add_argument("--min-len", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shape", default="llama-100m", help="a named shape of scripts/bench_hf_model.py")
    ap.add_argument("--attnscope-bin", default=os.path.join(REPO, "target", "release", "attnscope"))
    ap.add_argument("--max-batch-tokens", default="1024,4096,8192",
                    help="comma-separated --max-batch-tokens values for attnscope sweep (0 = its default)")
    ap.add_argument("--hf-batch-sizes", default="8,16,32", help="comma-separated HF batch sizes")
    ap.add_argument("--tune", type=int, default=0, metavar="K",
                    help="first time every config once on the first K prompts (reported apart), then run the rounds "
                         "with each engine's best config only (default 0: every config in every round)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--workdir", default=None, help="where the model, prompts and outputs go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the model, prompts and the last outputs")
    ap.add_argument("--quick", action="store_true", help="100 prompts, 1 round (a smoke test)")
    ap.add_argument("--no-check", action="store_true", help="skip the untimed output comparison")
    ap.add_argument("--check-seqs", type=int, default=20, help="prompts compared between the engines")
    ap.add_argument("--json", default=None, help="write the raw figures here")
    ap.add_argument("--self-test", action="store_true", help="check the HF stats code on a hand-made tensor")
    args = ap.parse_args()
    if args.self_test:
        return self_test()
    if args.quick:
        args.prompts, args.rounds = min(args.prompts, 100), 1
    mbts = [int(x) for x in args.max_batch_tokens.split(",") if x.strip()]
    bss = [int(x) for x in args.hf_batch_sizes.split(",") if x.strip()]
    if not os.path.exists(args.attnscope_bin):
        print(f"error: {args.attnscope_bin} not found (cargo build --release --bin attnscope)", file=sys.stderr)
        return 1

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import numpy as np  # noqa: F401
    import pyarrow
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no GPU", file=sys.stderr)
        return 1
    load_start = os.getloadavg()
    nproc = os.cpu_count()
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    version = subprocess.run([args.attnscope_bin, "--version"], capture_output=True, text=True).stdout.strip()

    work = args.workdir or tempfile.mkdtemp(prefix="bench_sweep_")
    os.makedirs(work, exist_ok=True)
    model_dir = os.path.join(work, "model")
    prompts_path = os.path.join(work, "prompts.jsonl")
    spec = os.path.join(work, "sweep.toml")
    log(f"work dir {work}; nproc {nproc}, load average {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")
    t0 = time.perf_counter()
    cfg, n_params, n_non_emb = make_model(model_dir, args.shape, args.seed)
    prompts = make_prompts(prompts_path, args.prompts, args.min_len, args.max_len, cfg.vocab_size, args.seed)
    write_spec(spec, model_dir, prompts_path, args.device, args.seed)
    n_tokens = sum(len(p) for p in prompts)
    log(f"model ({n_params / 1e6:.1f}M params) and {len(prompts)} prompts ({n_tokens} tokens) written in "
        f"{time.perf_counter() - t0:.1f} s")

    tune = None
    if args.tune and (len(mbts) > 1 or len(bss) > 1):
        tune = tune_configs(args, work, prompts, mbts, bss, device)
        mbts = [max(tune["attnscope"], key=lambda m: tune["attnscope"][m]["pps_excl_load"])]
        bss = [max(tune["hf"], key=lambda b: tune["hf"][b]["pps"])]
        log(f"tuned: --max-batch-tokens {mbts[0]}, HF batch {bss[0]}")

    res = {"attnscope": {m: [] for m in mbts}, "hf": {b: [] for b in bss}, "hf_load_s": []}
    check = None
    for rnd in range(args.rounds):
        for m in mbts:
            out = os.path.join(work, f"as-out-{m}")
            r = run_attnscope(args, spec, out, m)
            r.pop("index")
            res["attnscope"][m].append(r)
            log(f"round {rnd + 1}/{args.rounds} attnscope --max-batch-tokens {m}: {r['wall_s']:.1f} s "
                f"(load {r['load_s']:.2f} s) = {len(prompts) / r['wall_s']:.2f} prompts/s, "
                f"{r['bytes'] / 1e6:.0f} MB, {r['units']} units in {r['batches']} batches, prefill {r['prefill_s']:.1f} s, "
                f"write {r['write_s']:.1f} s")
        model, load_s = hf_load(args, model_dir, device)
        res["hf_load_s"].append(load_s)
        log(f"round {rnd + 1}/{args.rounds} HF load {load_s:.2f} s")
        for b in bss:
            out = os.path.join(work, f"hf-out-{b}")
            dt, size = run_hf(model, prompts, b, device, out)
            res["hf"][b].append(dict(loop_s=dt, bytes=size))
            log(f"round {rnd + 1}/{args.rounds} HF batch {b}: {dt:.1f} s = {len(prompts) / dt:.2f} prompts/s, "
                f"{size / 1e6:.0f} MB")
        del model
        if rnd == 0 and not args.no_check:
            check = compare_outputs(os.path.join(work, f"as-out-{mbts[0]}"), os.path.join(work, f"hf-out-{bss[0]}"),
                                    args.check_seqs)
            log(f"agreement on the first {args.check_seqs} prompts: {check}")
        if not args.keep or rnd + 1 < args.rounds:
            for m in mbts:
                shutil.rmtree(os.path.join(work, f"as-out-{m}"), ignore_errors=True)
            for b in bss:
                shutil.rmtree(os.path.join(work, f"hf-out-{b}"), ignore_errors=True)
    load_end = os.getloadavg()

    # ---- figures
    N = len(prompts)
    as_pps = {m: [N / r["wall_s"] for r in rs] for m, rs in res["attnscope"].items()}
    as_pps_x = {m: [N / max(r["wall_s"] - r["load_s"], 1e-9) for r in rs] for m, rs in res["attnscope"].items()}
    hf_pps = {b: [N / r["loop_s"] for r in rs] for b, rs in res["hf"].items()}
    hf_pps_l = {b: [N / (r["loop_s"] + res["hf_load_s"][i]) for i, r in enumerate(rs)] for b, rs in res["hf"].items()}
    best_m = max(mbts, key=lambda m: statistics.median(as_pps[m]))
    best_b = max(bss, key=lambda b: statistics.median(hf_pps[b]))
    ratio_incl = [a / h for a, h in zip(as_pps[best_m], hf_pps_l[best_b])]
    ratio_excl = [a / h for a, h in zip(as_pps_x[best_m], hf_pps[best_b])]
    # where attnscope's time goes (unit records, median over rounds of the best config)
    timing_med = {k: statistics.median(r[k] for r in res["attnscope"][best_m])
                  for k in ["wall_s", "load_s", "prefill_s", "write_s"]}
    timing_med["other_s"] = timing_med["wall_s"] - timing_med["load_s"] - timing_med["prefill_s"] - timing_med["write_s"]

    md = []
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    md.append(f"{N} prompts of {min(map(len, prompts))}–{max(map(len, prompts))} tokens ({n_tokens} tokens, "
              f"uniform lengths, seed {args.seed}) through random-weight {args.shape} ({n_params / 1e6:.1f}M "
              f"params), f32, device {args.device}, {args.threads} threads, {args.rounds} round(s); {cpu}, "
              f"nproc {nproc}, load average {load_start[0]:.2f} at start / {load_end[0]:.2f} at end; "
              f"{version}, torch {torch.__version__}, transformers {transformers.__version__}, "
              f"pyarrow {pyarrow.__version__}.\n")
    if tune is not None:
        md.append(f"Tuning pass (each config once on the first {tune['n']} prompts, {tune['tokens']} tokens; "
                  f"the best of each engine then ran the rounds):\n")
        md.append("| engine | config | prompts/s (load incl.) | prompts/s (load excl.) |")
        md.append("|---|---|---|---|")
        for m, t in tune["attnscope"].items():
            md.append(f"| attnscope sweep | --max-batch-tokens {m} | {fmt(t['pps'], 2)} | {fmt(t['pps_excl_load'], 2)} |")
        for b, t in tune["hf"].items():
            md.append(f"| HF loop | batch {b} | {fmt(t['pps_incl_load'], 2)} | {fmt(t['pps'], 2)} |")
        md.append("")
        md.append(f"Rounds on all {N} prompts:\n")
    md.append("| engine | config | prompts/s (median) | min – max | s per pass (median) |")
    md.append("|---|---|---|---|---|")
    for m in mbts:
        walls = [r["wall_s"] for r in res["attnscope"][m]]
        md.append(f"| attnscope sweep (whole command, load incl.) | --max-batch-tokens {m} | "
                  f"{fmt(statistics.median(as_pps[m]), 2)} | {fmt(min(as_pps[m]), 2)} – {fmt(max(as_pps[m]), 2)} | "
                  f"{fmt(statistics.median(walls))} |")
        md.append(f"| attnscope sweep (excl. manifest load_seconds) | --max-batch-tokens {m} | "
                  f"{fmt(statistics.median(as_pps_x[m]), 2)} | {fmt(min(as_pps_x[m]), 2)} – "
                  f"{fmt(max(as_pps_x[m]), 2)} | "
                  f"{fmt(statistics.median([r['wall_s'] - r['load_s'] for r in res['attnscope'][m]]))} |")
    for b in bss:
        loops = [r["loop_s"] for r in res["hf"][b]]
        md.append(f"| HF eager output_attentions + stats + Parquet (loop, load excl.) | batch {b} | "
                  f"{fmt(statistics.median(hf_pps[b]), 2)} | {fmt(min(hf_pps[b]), 2)} – {fmt(max(hf_pps[b]), 2)} | "
                  f"{fmt(statistics.median(loops))} |")
        md.append(f"| HF, same, load incl. | batch {b} | {fmt(statistics.median(hf_pps_l[b]), 2)} | "
                  f"{fmt(min(hf_pps_l[b]), 2)} – {fmt(max(hf_pps_l[b]), 2)} | "
                  f"{fmt(statistics.median([lp + ld for lp, ld in zip(loops, res['hf_load_s'])]))} |")
    md.append("")
    md.append(f"attnscope ÷ HF (prompts/s) per round, best configs (--max-batch-tokens {best_m} vs batch {best_b}):"
              f" load included on both sides min {ratio_incl and fmt(min(ratio_incl), 2)} / median "
              f"{fmt(statistics.median(ratio_incl), 2)} / max {fmt(max(ratio_incl), 2)}; load excluded on both "
              f"sides min {fmt(min(ratio_excl), 2)} / median {fmt(statistics.median(ratio_excl), 2)} / max "
              f"{fmt(max(ratio_excl), 2)} (target ≥ 3×).")
    md.append(f"HF load (from_pretrained): median {fmt(statistics.median(res['hf_load_s']), 2)} s. attnscope's "
              f"command (best config, median over rounds, from the units' records): wall "
              f"{timing_med['wall_s']:.1f} s = load {timing_med['load_s']:.1f} + batched prefill with stats "
              f"{timing_med['prefill_s']:.1f} + writing the unit directories {timing_med['write_s']:.1f} + the rest "
              f"(process start, spec, prompts, planning) {timing_med['other_s']:.1f} s.")
    a_bytes = statistics.median(r["bytes"] for r in res["attnscope"][best_m])
    h_bytes = statistics.median(r["bytes"] for r in res["hf"][best_b])
    md.append(f"Output per pass: attnscope {a_bytes / 1e6:.0f} MB (stats, received, distance, tokens, manifest), "
              f"HF {h_bytes / 1e6:.0f} MB (stats, received).")
    if check is not None:
        md.append(f"Agreement (untimed, first {args.check_seqs} prompts, max |attnscope − HF|): "
                  + json.dumps(check) + ".")
    md.append("The HF loop computes entropy, max_weight, argmax_slot, sink_mass, prev_mass, self_mass per query "
              "row and received_sum / received_mean per key slot; it skips group_mass (plain prompts have no "
              "groups; attnscope writes none either), the distance table, the tokens table and the manifest.")
    print("\n".join(md))

    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(args=vars(args), nproc=nproc, load_average_start=load_start, load_average_end=load_end,
                           attnscope_version=version, torch=torch.__version__, transformers=transformers.__version__,
                           n_prompts=N, n_tokens=n_tokens, n_params=n_params, n_non_emb_params=n_non_emb,
                           attnscope={str(k): v for k, v in res["attnscope"].items()},
                           hf={str(k): v for k, v in res["hf"].items()}, hf_load_s=res["hf_load_s"],
                           best=dict(max_batch_tokens=best_m, hf_batch=best_b),
                           tune=tune, ratio_load_included=ratio_incl, ratio_load_excluded=ratio_excl, agreement=check,
                           attnscope_timings_median=timing_med), f, indent=1)
    if args.keep:
        log(f"kept {work}")
    elif not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    else:
        for x in ["model", "prompts.jsonl", "sweep.toml"]:
            p = os.path.join(work, x)
            shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else (os.path.exists(p) and os.remove(p))
    return 0


if __name__ == "__main__":
    sys.exit(main())
