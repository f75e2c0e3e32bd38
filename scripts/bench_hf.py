#!/usr/bin/env python3
"""Benchmark Hugging Face transformers on the same random-weight model shapes as `attnscope bench`.

This is the reference side of attnscope's speed comparison: what a researcher pays today to get attention
probabilities out of transformers (eager attention + `output_attentions=True`), next to the fast path that
captures nothing (SDPA). Output is the JSON schema "attnscope-bench/1" (see the bench schema notes; the Rust
`attnscope bench --json` writes the same), and `scripts/bench_compare.py` merges the two files into a table.

Models are built from a config with random weights (`AutoModelForCausalLM.from_config`, `torch.manual_seed`);
nothing is downloaded (HF_HUB_OFFLINE=1). Named shapes: gpt2-124m, llama-100m, tinyllama-1.1b, llama-3.2-1b,
qwen2.5-7b; or `--config path/to/config.json` (a file or a model directory).

Modes
  prefill (batch 1, one forward over T random tokens, `use_cache=False`):
    sdpa                     attn_implementation="sdpa", no capture (the baseline; overhead_vs_none is vs this)
    eager                    attn_implementation="eager", no capture
    eager_output_attentions  eager + output_attentions=True (returns [1, heads, T, T] per layer)
  decode (`model.generate`, greedy, batch 1 and batch N, prompt of --decode-context random tokens):
    generate_sdpa, generate_eager, generate_eager_output_attentions
    Call: model.generate(ids, attention_mask=ones, max_new_tokens=n, min_new_tokens=n, do_sample=False,
          output_attentions=..., return_dict_in_generate=True)

Decode timing method (also written to the JSON "settings"):
    generate(max_new_tokens=S+1) runs the prompt prefill (which yields the first new token) plus S single-token
    decode forwards; generate(max_new_tokens=1) runs the same prefill and generate's fixed overhead with no
    decode forward. Both are timed in the same repeat, same mode, same prompt, and
        ms_per_step = (t_generate(S+1) - t_generate(1)) / S,   S = --decode-steps.
    tokens_per_s = batch * S / (S * ms_per_step / 1000). peak_memory_bytes is that of generate(S+1).

Measurement
  * torch.inference_mode(); one model instance per shape, attention implementation switched with
    `model.set_attn_implementation` (same weights for every mode).
  * --warmup untimed runs per mode, then --repeats rounds; inside each round every mode is measured once
    (interleaved), so drift (thermal, other load) hits all modes alike. median/min/max/p10/p90 over rounds.
  * CUDA: torch.cuda.synchronize() before starting and before stopping the clock; peak memory =
    torch.cuda.max_memory_allocated after torch.cuda.reset_peak_memory_stats().
    CPU: peak RSS = VmHWM from /proc/self/status after resetting it with "5" > /proc/self/clear_refs (so it
    includes the weights and whatever the allocator kept from earlier runs).
  * prefill logits: --prefill-logits last (default) asks for the last row only (`logits_to_keep=1`, like
    attnscope's prefill before generation); `all` computes [T, vocab] (what a plain `model(ids)` does).

Derived numbers (exactly the schema's formulas)
  * non-embedding params = all parameters - embedding tables (token + position) - untied lm_head
    (= transformer blocks + final norm).
  * prefill tflops = (2 * non-embedding params * T + attention flops) / median time / 1e12;
    attention flops (causal) = 2 * 2 * n_layers * n_heads * head_dim * T*(T+1)/2 (batch 1).
  * decode bytes per step = params read per step * bytes/param + KV bytes; params read per step =
    non-embedding params + lm_head (vocab x hidden); KV bytes at step i (0-based) =
    2 * n_layers * n_kv_heads * head_dim * (context + i + 1) * bytes, summed over the batch.
    bytes_per_s = sum over the S steps / (S * median ms_per_step).

Examples
  HF_HUB_OFFLINE=1 python scripts/bench_hf.py --models llama-100m,gpt2-124m --prefill 128,256 --batch 1,4 \\
      --repeats 3 --threads 2 --out bench-hf-cpu.json
  python scripts/bench_hf.py --models llama-3.2-1b,qwen2.5-7b --device cuda --dtype bfloat16 \\
      --prefill 512,2048 --batch 1,8 --peak-tflops 989 --peak-bandwidth-gbs 3350 --out bench-hf-h100.json
"""

import argparse
import gc
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
import transformers  # noqa: E402

from bench_hf_model import (  # noqa: E402
    DECODE_MODES,
    DTYPES,
    PREFILL_MODES,
    SHAPES,
    Meter,
    build_model,
    load_config,
    log,
    meta_counts,
    run_generate,
    run_prefill,
    set_impl,
    shape_info,
    summarize,
)

SCHEMA = "attnscope-bench/1"


# ----------------------------------------------------------------------------------------------------------
# per-model benchmark

def bench_model(name, cfg, args, device, dtype, dtype_bytes, peak_tflops, peak_bw, not_measured):
    info = shape_info(cfg)
    total, non_emb, read_per_step = meta_counts(cfg)
    entry = dict(model=name, parameters=total, n_layers=info["n_layers"], n_heads=info["n_heads"],
                 n_kv_heads=info["n_kv_heads"], head_dim=info["head_dim"], hidden_size=info["hidden_size"],
                 vocab_size=info["vocab_size"], prefill=[], decode=[])
    need = total * dtype_bytes
    if args.max_params is not None and total > args.max_params:
        not_measured.append(f"{name}: skipped ({total / 1e9:.2f}B parameters > --max-params "
                            f"{args.max_params / 1e9:.2f}B; needs {need / 1e9:.1f} GB in {args.dtype})")
        return None
    avail = available_memory(device)
    if avail is not None and need * 1.15 > avail:
        not_measured.append(f"{name}: skipped (needs {need / 1e9:.1f} GB of weights in {args.dtype}, "
                            f"{avail / 1e9:.1f} GB available on {device.type})")
        return None

    L, H, KV, hd = info["n_layers"], info["n_heads"], info["n_kv_heads"], info["head_dim"]
    max_pos = info["max_positions"]
    log(f"== {name}: {total / 1e6:.1f}M params ({non_emb / 1e6:.1f}M non-embedding), building on {device}")
    t0 = time.perf_counter()
    model = build_model(cfg, dtype, device, args.seed)
    log(f"   built in {time.perf_counter() - t0:.1f}s")
    meter = Meter(device)
    gen = torch.Generator().manual_seed(args.seed)

    with torch.inference_mode():
        # Sanity: switching implementations changes the path but not the function.
        probe = torch.randint(0, info["vocab_size"], (1, 16), generator=gen).to(device)
        set_impl(model, "sdpa")
        a = model(probe, use_cache=False).logits.float()
        set_impl(model, "eager")
        b = model(probe, use_cache=False).logits.float()
        diff = (a - b).abs().max().item()
        log(f"   sdpa vs eager logits max |diff| = {diff:.3g}")
        del a, b

        # ---- prefill
        for t in args.prefill:
            if max_pos is not None and t > max_pos:
                not_measured.append(f"{name}: prefill T={t} skipped (> max positions {max_pos})")
                continue
            ids = torch.randint(0, info["vocab_size"], (1, t), generator=gen).to(device)
            times = {m: [] for m in args.modes}
            mems = {m: [] for m in args.modes}
            failed = {}
            for m in args.modes:
                for _ in range(args.warmup):
                    try:
                        del_out = run_prefill(model, m, ids, L, args.prefill_logits)
                        del del_out
                    except torch.OutOfMemoryError as e:
                        failed[m] = f"out of memory ({str(e).splitlines()[0][:120]})"
                        break
            for _ in range(args.repeats):
                for m in args.modes:
                    if m in failed:
                        continue
                    try:
                        t0 = meter.start()
                        out = run_prefill(model, m, ids, L, args.prefill_logits)
                        dt, mem = meter.stop(t0)
                        del out
                    except torch.OutOfMemoryError as e:
                        failed[m] = f"out of memory ({str(e).splitlines()[0][:120]})"
                        continue
                    times[m].append(dt * 1e3)
                    mems[m].append(mem)
            for m, why in failed.items():
                not_measured.append(f"{name}: prefill T={t} {m}: {why}")
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            attn_flops = 2 * 2 * L * H * hd * t * (t + 1) / 2
            flops = 2 * non_emb * t + attn_flops
            base = summarize(times["sdpa"])["median"] if times.get("sdpa") else None
            for m in args.modes:
                if not times[m]:
                    continue
                s = summarize(times[m])
                sec = s["median"] / 1e3
                tf = flops / sec / 1e12
                entry["prefill"].append(dict(
                    t=t, mode=m, median_ms=s["median"], min_ms=s["min"], max_ms=s["max"], p10_ms=s["p10"],
                    p90_ms=s["p90"], repeats=len(times[m]), tokens_per_s=t / sec, tflops=tf,
                    attention_tflops=attn_flops / sec / 1e12,
                    fraction_of_peak=(tf / peak_tflops) if peak_tflops else None,
                    peak_memory_bytes=max(x for x in mems[m] if x is not None) if any(mems[m]) else None,
                    overhead_vs_none=None if (m == "sdpa" or base is None) else s["median"] / base))
            log(f"   prefill T={t}: " + ", ".join(f"{m} {summarize(times[m])['median']:.1f}ms"
                                                   for m in args.modes if times[m]))

        # ---- decode
        steps, ctx = args.decode_steps, args.decode_context
        if steps > 0 and args.decode_modes:
            if max_pos is not None and ctx + steps + 1 > max_pos:
                not_measured.append(f"{name}: decode skipped (context {ctx} + {steps + 1} > max positions {max_pos})")
                steps = 0
        for b in (args.batch if steps > 0 else []):
            ids = torch.randint(0, info["vocab_size"], (b, ctx), generator=gen).to(device)
            mask = torch.ones_like(ids)
            per_step = {m: [] for m in args.decode_modes}
            mems = {m: [] for m in args.decode_modes}
            failed = {}
            for m in args.decode_modes:
                for _ in range(args.warmup):
                    try:
                        run_generate(model, m, ids, mask, 1)
                        run_generate(model, m, ids, mask, steps + 1)
                    except torch.OutOfMemoryError as e:
                        failed[m] = f"out of memory ({str(e).splitlines()[0][:120]})"
                        break
            for _ in range(args.repeats):
                for m in args.decode_modes:
                    if m in failed:
                        continue
                    try:
                        t0 = meter.start()
                        out = run_generate(model, m, ids, mask, 1)
                        t_pre, _ = meter.stop(t0)
                        del out
                        t0 = meter.start()
                        out = run_generate(model, m, ids, mask, steps + 1)
                        t_all, mem = meter.stop(t0)
                        del out
                    except torch.OutOfMemoryError as e:
                        failed[m] = f"out of memory ({str(e).splitlines()[0][:120]})"
                        continue
                    per_step[m].append((t_all - t_pre) / steps * 1e3)
                    mems[m].append(mem)
            for m, why in failed.items():
                not_measured.append(f"{name}: decode batch={b} {m}: {why}")
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            weight_bytes = read_per_step * dtype_bytes
            kv_bytes = sum(2 * L * KV * hd * (ctx + i + 1) * dtype_bytes * b for i in range(steps))
            total_bytes = steps * weight_bytes + kv_bytes
            base = summarize(per_step["generate_sdpa"])["median"] if per_step.get("generate_sdpa") else None
            for m in args.decode_modes:
                if not per_step[m]:
                    continue
                s = summarize(per_step[m])
                if s["min"] <= 0:
                    log(f"   WARNING: {m} batch={b}: a repeat had t(generate {steps + 1}) <= t(generate 1); "
                        "the machine is too noisy for the subtraction method (raise --decode-steps/--repeats)")
                sec_total = s["median"] / 1e3 * steps
                bps = total_bytes / sec_total if sec_total > 0 else None
                entry["decode"].append(dict(
                    batch=b, context=ctx, steps=steps, mode=m, median_ms_per_step=s["median"],
                    min_ms_per_step=s["min"], max_ms_per_step=s["max"], repeats=len(per_step[m]),
                    tokens_per_s=(b * steps / sec_total) if sec_total > 0 else None, bytes_per_s=bps,
                    fraction_of_peak_bandwidth=(bps / (peak_bw * 1e9)) if (peak_bw and bps) else None,
                    peak_memory_bytes=max(x for x in mems[m] if x is not None) if any(mems[m]) else None,
                    overhead_vs_none=None if (m == "generate_sdpa" or base is None) else s["median"] / base))
            log(f"   decode batch={b}: " + ", ".join(f"{m} {summarize(per_step[m])['median']:.2f}ms/step"
                                                     for m in args.decode_modes if per_step[m]))

    if device.type == "cpu" and not meter.cpu_reset_ok:
        not_measured.append(f"{name}: note: could not reset VmHWM; CPU peak memory is the process-lifetime peak")
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return entry


def available_memory(device):
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# ----------------------------------------------------------------------------------------------------------
# device description, output

def device_info(device, dtype_name, threads, peak_tflops, peak_bw):
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        driver = None
        try:
            driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
        except Exception:
            pass
    else:
        name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        name = line.split(":", 1)[1].strip()
                        break
        except OSError:
            pass
        name = f"{name} ({threads} threads)"
        driver = None
    return dict(kind=device.type, name=name, driver=driver, threads=threads, compute_dtype=dtype_name,
                peak_tflops=peak_tflops, peak_bandwidth_gbs=peak_bw)


def write_json(path, doc):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".bench_hf.", suffix=".json", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def fmt_mem(b):
    return "-" if b is None else f"{b / 2**20:.0f} MiB"


def print_table(doc):
    dev = doc["device"]
    print(f"\nHF transformers benchmark — {doc['engine_version']} — {dev['kind']} {dev['name']}, "
          f"{dev['compute_dtype']}, warmup {doc['settings']['warmup']}, repeats {doc['settings']['repeats']}")
    for m in doc["models"]:
        print(f"\n### {m['model']}  ({m['parameters'] / 1e6:.1f}M params, {m['n_layers']} layers, "
              f"{m['n_heads']}/{m['n_kv_heads']} heads, head_dim {m['head_dim']})")
        if m["prefill"]:
            print(f"{'prefill':<26}{'T':>6}{'median ms':>11}{'p10':>9}{'p90':>9}{'tok/s':>10}{'TFLOP/s':>9}"
                  f"{'vs sdpa':>9}{'peak mem':>11}")
            for r in m["prefill"]:
                ov = "-" if r["overhead_vs_none"] is None else f"{r['overhead_vs_none']:.2f}x"
                print(f"{r['mode']:<26}{r['t']:>6}{r['median_ms']:>11.1f}{r['p10_ms']:>9.1f}{r['p90_ms']:>9.1f}"
                      f"{r['tokens_per_s']:>10.0f}{r['tflops']:>9.3g}{ov:>9}{fmt_mem(r['peak_memory_bytes']):>11}")
        if m["decode"]:
            print(f"{'decode':<34}{'batch':>6}{'ctx':>5}{'ms/step':>9}{'min':>8}{'max':>8}{'tok/s':>9}"
                  f"{'GB/s':>8}{'vs sdpa':>9}{'peak mem':>11}")
            for r in m["decode"]:
                ov = "-" if r["overhead_vs_none"] is None else f"{r['overhead_vs_none']:.2f}x"
                gbs = "-" if r["bytes_per_s"] is None else f"{r['bytes_per_s'] / 1e9:.1f}"
                tps = "-" if r["tokens_per_s"] is None else f"{r['tokens_per_s']:.1f}"
                print(f"{r['mode']:<34}{r['batch']:>6}{r['context']:>5}{r['median_ms_per_step']:>9.2f}"
                      f"{r['min_ms_per_step']:>8.2f}{r['max_ms_per_step']:>8.2f}{tps:>9}{gbs:>8}{ov:>9}"
                      f"{fmt_mem(r['peak_memory_bytes']):>11}")
    if doc["not_measured"]:
        print("\nnot measured:")
        for s in doc["not_measured"]:
            print(f"  - {s}")


# ----------------------------------------------------------------------------------------------------------

def int_list(s):
    if s.strip().lower() in ("", "none"):
        return []
    return [int(x) for x in s.split(",") if x.strip()]


def mode_list(allowed):
    def parse(s):
        if s.strip().lower() in ("", "none"):
            return []
        out = [x.strip() for x in s.split(",") if x.strip()]
        bad = [x for x in out if x not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown mode(s) {bad}; choose from {allowed}")
        return out
    return parse


def parse_count(s):
    s = s.strip().upper()
    mult = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9}.get(s[-1:], None)
    return int(float(s[:-1]) * mult) if mult else int(float(s))


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action):
        if action.default is None or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Benchmark HF transformers (sdpa / eager / eager+output_attentions, prefill and generate) "
                    "on random-weight models of attnscope's named shapes; writes attnscope-bench/1 JSON.",
        epilog="The docstring at the top of scripts/bench_hf.py gives the exact timing method (decode per step = "
               "(t(generate S+1 tokens) - t(generate 1 token)) / S) and the FLOP/byte formulas. Named shapes: "
               + ", ".join(SHAPES) + ". Needs no network (HF_HUB_OFFLINE=1) and no GPU.",
        formatter_class=_HelpFormatter)
    p.add_argument("--models", default="llama-100m",
                   help="comma-separated named shapes (" + ", ".join(SHAPES) + ") or config.json paths; "
                        "'none' to run only --config models")
    p.add_argument("--config", action="append", default=[],
                   help="extra model from a config.json (file or directory); repeatable")
    p.add_argument("--prefill", type=int_list, default="128,256", help="prefill lengths T (batch 1); 'none' skips")
    p.add_argument("--batch", type=int_list, default="1,4", help="decode batch sizes")
    p.add_argument("--decode-context", type=int, default=128, help="prompt length before decoding")
    p.add_argument("--decode-steps", type=int, default=16, help="decode steps timed per generate; 0 skips decode")
    p.add_argument("--modes", type=mode_list(PREFILL_MODES), default=",".join(PREFILL_MODES),
                   help="prefill modes to run ('none' skips prefill)")
    p.add_argument("--decode-modes", type=mode_list(DECODE_MODES), default=",".join(DECODE_MODES),
                   help="decode modes to run ('none' skips decode)")
    p.add_argument("--prefill-logits", choices=["last", "all"], default="last",
                   help="logit rows computed in prefill: last (logits_to_keep=1) or all [T, vocab]")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per mode before timing")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (modes interleaved within a round)")
    p.add_argument("--seed", type=int, default=0, help="torch.manual_seed for weights and input tokens")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own choice)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available else cpu")
    p.add_argument("--dtype", choices=list(DTYPES), default=None,
                   help="compute dtype (default: float32 on cpu, bfloat16 on cuda)")
    p.add_argument("--max-params", type=parse_count, default=None,
                   help="skip models with more parameters (e.g. 2B, 500M); listed in not_measured")
    p.add_argument("--peak-tflops", type=float, default=None, help="device dense peak TFLOP/s for the dtype")
    p.add_argument("--peak-bandwidth-gbs", type=float, default=None, help="device memory bandwidth, GB/s")
    p.add_argument("--out", default=None, help="write JSON here (atomically: temp file + rename)")
    args = p.parse_args(argv)

    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.decode_steps < 0 or args.decode_context < 1:
        p.error("--decode-steps must be >= 0 and --decode-context >= 1")
    dev_name = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dev_name == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False")
    device = torch.device(dev_name)
    dtype_arg = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    args.dtype = dtype_arg
    dtype, dtype_name, dtype_bytes = DTYPES[dtype_arg]
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    names = [x.strip() for x in args.models.split(",") if x.strip() and x.strip().lower() != "none"] + args.config
    if not names:
        p.error("no models: give --models and/or --config")

    doc = dict(
        schema=SCHEMA,
        engine="hf-transformers",
        engine_version=f"transformers {transformers.__version__} / torch {torch.__version__}",
        created_unix=int(time.time()),
        command="python " + " ".join(shlex.quote(a) for a in [sys.argv[0]] + (argv or sys.argv[1:])),
        device=device_info(device, dtype_name, threads, args.peak_tflops, args.peak_bandwidth_gbs),
        settings=dict(
            warmup=args.warmup, repeats=args.repeats, decode_steps=args.decode_steps,
            decode_context=args.decode_context, seed=args.seed,
            prefill_batch=1, prefill_logits=args.prefill_logits, interleaved_modes=True,
            prefill_method="one model(ids, use_cache=False[, output_attentions=True]) forward, batch 1",
            decode_method=("ms_per_step = (t(generate max_new_tokens=S+1) - t(generate max_new_tokens=1)) / S, "
                           "S = decode_steps; both greedy, same prompt/mode, timed in the same repeat; "
                           "output_attentions and return_dict_in_generate=True as the mode says"),
            flops_params="non-embedding = all - embedding tables - untied lm_head",
            decode_params_read="non-embedding + lm_head (vocab x hidden); KV at step i uses context+i+1 keys",
            attn_switch="model.set_attn_implementation on one model instance (same weights)",
            peak_memory=("cuda: torch.cuda.max_memory_allocated" if device.type == "cuda"
                         else "cpu: VmHWM after clear_refs=5 (process RSS incl. weights)"),
        ),
        models=[],
        not_measured=[],
    )
    log(f"{doc['engine_version']}; device {doc['device']['name']}; dtype {dtype_name}; threads {threads}")
    for name in names:
        cfg = load_config(name)
        entry = bench_model(name, cfg, args, device, dtype, dtype_bytes, args.peak_tflops,
                            args.peak_bandwidth_gbs, doc["not_measured"])
        if entry is not None:
            doc["models"].append(entry)
        if args.out:
            write_json(args.out, doc)  # partial results survive a later crash
    if args.out:
        write_json(args.out, doc)
        log(f"wrote {args.out}")
    print_table(doc)


if __name__ == "__main__":
    main()
