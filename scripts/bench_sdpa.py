#!/usr/bin/env python3
"""Time torch's fused attention (SDPA, flash backend) on Llama-3.2-1B attention shapes: the PyTorch side of the
attention-kernel benchmark that `attnscope bench-attention --json` measures on the attnscope side.

Both sides write the JSON schema "attnscope-attn-bench/1" ("engine": "torch-sdpa" here, "attnscope" there);
`scripts/attn_bench_compare.py A.json B.json` merges them into one Markdown table.

What is timed (one attention layer, batch 1, causal, forward only)
  sdpa_flash    F.scaled_dot_product_attention(q, k, v, is_causal=True[, enable_gqa=True]) inside
                torch.nn.attention.sdpa_kernel(SDPBackend.FLASH_ATTENTION). Output only; no probabilities.
                If the flash kernel refuses the inputs (e.g. f32, an old GPU), it is run with
                SDPBackend.EFFICIENT_ATTENTION instead, a note is printed, and the row is named
                "sdpa_efficient" so that it is never mistaken for flash.
                GQA (32 query heads, 8 KV heads): `enable_gqa=True` when this torch and backend accept it;
                otherwise K/V are expanded to 32 heads with repeat_interleave OUTSIDE the timed region and the
                row says so ("gqa": "repeat_interleave_outside_timing").
  eager_probs   (--with-probs) what researchers do today to get the attention probabilities P: transformers'
                eager_attention_forward, line for line:
                    s = torch.matmul(q, k_rep.transpose(2, 3)) * scale
                    s = s + causal_mask                       # additive [1, 1, T, T] mask, dtype min above the diagonal
                    p = softmax(s, dim=-1, dtype=torch.float32).to(q.dtype)
                    o = torch.matmul(p, v_rep)                # returns (o, p): P is materialised, [1, 32, T, T]
                K/V expansion to 32 heads (transformers' repeat_kv) and the mask are built once, outside the timed
                region. T is skipped when the T x T tensors alive at the peak would exceed --max-probs-gib:
                    probs_bytes = batch * n_heads * T^2 * (bytes(dtype) + 4)
                (the scores in dtype plus the f32 softmax; for f32 the two are both 4 bytes).

Timing
  CUDA events. Each sample launches `inner` back-to-back calls between two events after a
  torch.cuda.synchronize(), and ms = elapsed / inner. With --inner auto (default), inner is chosen after warmup
  so that one sample takes at least --min-sample-ms (small-T flash calls last microseconds, comparable to the
  launch overhead). --warmup untimed samples, then --repeats timed ones: median, p10, p90 (linear
  interpolation), min, max. Inputs stay resident (they fit in L2 at small T; no cache flush), as in the usual
  flash-attention benchmarks. peak_memory_bytes = torch.cuda.max_memory_allocated over the timed samples
  (inputs included).
  TFLOP/s = causal attention FLOPs / median time, FLOPs = 4 * batch * n_heads * head_dim * T*(T+1)/2
  (QK^T and PV, 2 FLOPs per multiply-add, only the causal lower triangle counted). The same count is used for
  eager_probs, although eager computes the full T x T square.

A sanity check compares each sdpa output with the eager output (when --with-probs ran at that T) or with an f32
reference at a small T, and stores the max |difference| in the JSON.

--device cpu runs the same code on the CPU (perf_counter timing; torch's CPU flash kernel) as a smoke test of
the script; its figures say nothing about GPU kernels.

Examples
  python3 scripts/bench_sdpa.py --with-probs --out attn_sdpa.json
  python3 scripts/bench_sdpa.py --t 1024,4096 --dtype f16 --repeats 50
  python3 scripts/bench_sdpa.py --device cpu --t 64,128 --with-probs --repeats 3 --out /tmp/smoke.json
"""

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time

SCHEMA = "attnscope-attn-bench/1"
ENGINE = "torch-sdpa"
DTYPE_NAMES = ["bf16", "f16", "f32"]
FLOPS_FORMULA = "4 * batch * n_heads * head_dim * T*(T+1)/2  (causal attention: QK^T + PV, lower triangle only)"
PROBS_BYTES_FORMULA = "batch * n_heads * T^2 * (bytes(dtype) + 4)  (scores in dtype + f32 softmax, alive at the peak)"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def int_list(s):
    out = []
    for x in s.split(","):
        x = x.strip()
        if not x:
            continue
        try:
            v = int(x)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {x!r}")
        if v < 1:
            raise argparse.ArgumentTypeError(f"values must be >= 1, got {v}")
        out.append(v)
    if not out:
        raise argparse.ArgumentTypeError("empty list")
    return out


def inner_arg(s):
    if s == "auto":
        return None
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError("--inner must be 'auto' or >= 1")
    return v


def quantile(xs, q):
    s = sorted(xs)
    if len(s) == 1:
        return s[0]
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def causal_flops(batch, n_heads, head_dim, t):
    return 4 * batch * n_heads * head_dim * t * (t + 1) / 2


def probs_bytes(batch, n_heads, t, elem_bytes):
    return batch * n_heads * t * t * (elem_bytes + 4)


# ------------------------------------------------------------------------------------------------------------
# everything below needs torch; imported lazily so that --help works without it


def import_torch():
    global torch, F
    import torch  # noqa: F401
    import torch.nn.functional as F  # noqa: F401
    return torch


def torch_dtype(name):
    return {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[name]


def oom_types():
    types = []
    for t in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None)):
        if t is not None and t not in types:
            types.append(t)
    return tuple(types) or (RuntimeError,)


def backend_ctx(name):
    """Context manager restricting SDPA to one backend ('flash' or 'efficient')."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        be = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION}[name]
        return sdpa_kernel(be)
    except ImportError:  # torch < 2.3
        return torch.backends.cuda.sdp_kernel(enable_flash=(name == "flash"), enable_math=False,
                                              enable_mem_efficient=(name == "efficient"))


def sdpa_call(q, k, v, backend, gqa):
    with backend_ctx(backend):
        if gqa:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def try_sdpa(q, k, v, k_rep, v_rep, backend, allow_gqa):
    """One untimed call: returns (gqa_mode, output) or raises RuntimeError if the backend refuses the inputs."""
    if k.shape[1] == q.shape[1]:
        return "none (n_kv_heads == n_heads)", sdpa_call(q, k, v, backend, False)
    why = "--no-enable-gqa"
    if allow_gqa:
        try:
            return "enable_gqa", sdpa_call(q, k, v, backend, True)
        except TypeError:  # torch < 2.5 has no enable_gqa
            why = f"torch {torch.__version__} has no enable_gqa"
        except RuntimeError as e:
            if isinstance(e, oom_types()):
                raise
            why = f"{backend} refused enable_gqa=True: {first_line(e)}"
    o = sdpa_call(q, k_rep, v_rep, backend, False)  # raises if the backend refuses the inputs altogether
    if allow_gqa:
        log(f"   note: {why}; K/V expanded with repeat_interleave outside the timed region instead")
    return "repeat_interleave_outside_timing", o


def first_line(e):
    s = str(e).strip().splitlines()
    return (s[0] if s else type(e).__name__)[:200]


def eager_probs(q, k_rep, v_rep, mask, scale):
    # transformers' eager_attention_forward (models/llama/modeling_llama.py), dropout 0.
    s = torch.matmul(q, k_rep.transpose(2, 3)) * scale
    s = s + mask
    p = F.softmax(s, dim=-1, dtype=torch.float32).to(q.dtype)
    o = torch.matmul(p, v_rep)
    return o, p


class Timer:
    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def sample(self, fn, inner):
        """ms per call over `inner` back-to-back calls."""
        self.sync()
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / inner
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        return (time.perf_counter() - t0) * 1e3 / inner


def measure(fn, timer, args):
    for _ in range(args.warmup):
        timer.sample(fn, 1)
    inner = args.inner
    if inner is None:
        one = min(timer.sample(fn, 1) for _ in range(3))
        inner = 1 if one <= 0 else max(1, min(args.max_inner, math.ceil(args.min_sample_ms / one)))
        for _ in range(min(args.warmup, 1)):
            timer.sample(fn, inner)  # warm the chosen loop length too
    if timer.cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    xs = [timer.sample(fn, inner) for _ in range(args.repeats)]
    peak = torch.cuda.max_memory_allocated() if timer.cuda else None
    return dict(median_ms=quantile(xs, 0.5), p10_ms=quantile(xs, 0.1), p90_ms=quantile(xs, 0.9),
                min_ms=min(xs), max_ms=max(xs), repeats=len(xs), inner=inner, peak_memory_bytes=peak)


def max_abs_diff(a, b):
    return float((a.float() - b.float()).abs().max().item())


def reference_check(args, device, dtype, gen_seed):
    """sdpa (the configured backend) vs an f32 math reference at a small T, for when eager did not run."""
    t = min(256, min(args.t))
    g = torch.Generator(device="cpu").manual_seed(gen_seed)
    B, H, KV, D = args.batch, args.n_heads, args.n_kv_heads, args.head_dim
    q = torch.randn(B, H, t, D, generator=g).to(device, dtype)
    k = torch.randn(B, KV, t, D, generator=g).to(device, dtype)
    v = torch.randn(B, KV, t, D, generator=g).to(device, dtype)
    rep = H // KV
    k_rep, v_rep = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    out = {}
    for backend in [args.backend] + (["efficient"] if args.backend == "flash" else []):
        try:
            mode, o = try_sdpa(q, k, v, k_rep, v_rep, backend, not args.no_enable_gqa)
        except RuntimeError as e:
            if isinstance(e, oom_types()):
                raise
            continue
        qf, kf, vf = q.float(), k_rep.float(), v_rep.float()
        s = torch.matmul(qf, kf.transpose(2, 3)) / math.sqrt(D)
        s = s.masked_fill(torch.ones(t, t, dtype=torch.bool, device=device).triu(1), float("-inf"))
        ref = torch.matmul(torch.softmax(s, dim=-1), vf)
        out = dict(t=t, backend=backend, gqa=mode, reference="f32 math softmax(QK^T/sqrt(d) + causal) V",
                   max_abs_diff=max_abs_diff(o, ref))
        break
    return out


# ------------------------------------------------------------------------------------------------------------


def device_info(device):
    import platform
    d = dict(kind=device.type, name=None, driver=None, cuda=torch.version.cuda, torch=torch.__version__,
             compute_capability=None)
    if device.type == "cuda":
        d["name"] = torch.cuda.get_device_name(device)
        cc = torch.cuda.get_device_capability(device)
        d["compute_capability"] = f"{cc[0]}.{cc[1]}"
        try:
            r = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=20)
            lines = r.stdout.strip().splitlines()
            d["driver"] = lines[0].strip() if lines else None
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
        d["name"] = f"{name} ({torch.get_num_threads()} threads)"
    return d


def write_json(path, doc):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".bench_sdpa.", suffix=".json", dir=d)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=2, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def fmt_mem(b):
    return "-" if b is None else f"{b / 2**30:.2f} GiB"


def print_table(doc):
    dev = doc["device"]
    st = doc["settings"]
    print(f"\ntorch SDPA attention benchmark — torch {dev['torch']} (CUDA {dev['cuda']}) — {dev['kind']} "
          f"{dev['name']}" + (f", driver {dev['driver']}" if dev.get("driver") else ""))
    print(f"batch {st['batch']}, {st['n_heads']} q heads / {st['n_kv_heads']} kv heads, head_dim {st['head_dim']}, "
          f"causal, {st['dtype']}; warmup {st['warmup']}, repeats {st['repeats']}")
    print(f"TFLOP/s = {st['flops_formula']} / median time")
    cols = [("impl", 14, "<"), ("T", 6, ">"), ("median ms", 10, ">"), ("p10 ms", 10, ">"), ("p90 ms", 10, ">"),
            ("TFLOP/s", 9, ">"), ("inner", 6, ">"), ("peak mem", 10, ">"), ("backend / gqa", 0, "<")]
    print("  ".join(f"{h:{a}{w}}" for h, w, a in cols).rstrip())
    for r in doc["results"]:
        cells = [r["impl"], str(r["t"]), f"{r['median_ms']:.4g}", f"{r['p10_ms']:.4g}", f"{r['p90_ms']:.4g}",
                 "-" if r.get("tflops") is None else f"{r['tflops']:.4g}", str(r["inner"]),
                 fmt_mem(r.get("peak_memory_bytes")), f"{r['backend']} / {r['gqa']}"]
        print("  ".join(f"{c:{a}{w}}" for c, (_, w, a) in zip(cells, cols)).rstrip())
    for c in doc.get("checks", []):
        print(f"check T={c['t']}: {c['what']}: max |diff| = {c['max_abs_diff']:.3g}")
    if doc["not_measured"]:
        print("not measured:")
        for s in doc["not_measured"]:
            print(f"  - {s}")


# ------------------------------------------------------------------------------------------------------------


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Time torch SDPA (flash backend) and, with --with-probs, eager attention that materialises "
                    "the probabilities, on Llama-3.2-1B attention shapes; writes attnscope-attn-bench/1 JSON.",
        epilog="The docstring at the top of scripts/bench_sdpa.py states exactly what is timed and how. "
               "Compare with attnscope: python3 scripts/attn_bench_compare.py attn_attnscope.json attn_sdpa.json",
        formatter_class=_HelpFormatter)
    p.add_argument("--t", type=int_list, default="512,1024,2048,4096,8192", metavar="T,T,...",
                   help="sequence lengths (query = key length, causal)")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default="bf16", help="q/k/v dtype")
    p.add_argument("--batch", type=int, default=1, help="batch size")
    p.add_argument("--n-heads", type=int, default=32, help="query heads (Llama-3.2-1B: 32)")
    p.add_argument("--n-kv-heads", type=int, default=8, help="key/value heads (Llama-3.2-1B: 8)")
    p.add_argument("--head-dim", type=int, default=64, help="head dimension (Llama-3.2-1B: 64)")
    p.add_argument("--with-probs", action="store_true",
                   help="also time eager attention returning the probabilities P (impl eager_probs)")
    p.add_argument("--max-probs-gib", type=float, default=16.0,
                   help="skip eager_probs at T where batch*n_heads*T^2*(bytes(dtype)+4) exceeds this many GiB")
    p.add_argument("--backend", choices=["flash", "efficient"], default="flash",
                   help="SDPA backend to try first; flash falls back to efficient (with a note) when refused")
    p.add_argument("--no-enable-gqa", action="store_true",
                   help="do not use enable_gqa=True; expand K/V with repeat_interleave outside the timed region")
    p.add_argument("--warmup", type=int, default=3, help="untimed samples before timing")
    p.add_argument("--repeats", type=int, default=20, help="timed samples; median/p10/p90 over them")
    p.add_argument("--inner", type=inner_arg, default="auto", metavar="auto|N",
                   help="calls per timed sample; auto: enough calls for one sample to last --min-sample-ms")
    p.add_argument("--min-sample-ms", type=float, default=1.0, help="target length of one sample with --inner auto")
    p.add_argument("--max-inner", type=int, default=200, help="upper bound for --inner auto")
    p.add_argument("--seed", type=int, default=0, help="seed of the random q/k/v")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                   help="cpu only smoke-tests the script (its figures say nothing about GPU kernels)")
    p.add_argument("--out", default=None, help="write JSON here (atomically: temp file + rename)")
    args = p.parse_args(argv)

    if args.repeats < 1 or args.warmup < 0 or args.batch < 1:
        p.error("--repeats and --batch must be >= 1, --warmup >= 0")
    if min(args.n_heads, args.n_kv_heads, args.head_dim) < 1 or args.n_heads % args.n_kv_heads:
        p.error("--n-heads must be a positive multiple of --n-kv-heads, and --head-dim >= 1")
    if args.min_sample_ms <= 0 or args.max_inner < 1:
        p.error("--min-sample-ms must be > 0 and --max-inner >= 1")

    import_torch()
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False (use --device cpu for a smoke test)")
    device = torch.device(args.device)
    dtype = torch_dtype(args.dtype)
    elem = torch.tensor([], dtype=dtype).element_size()
    B, H, KV, D = args.batch, args.n_heads, args.n_kv_heads, args.head_dim
    rep = H // KV
    scale = 1.0 / math.sqrt(D)
    timer = Timer(device)
    OOM = oom_types()

    doc = dict(
        schema=SCHEMA,
        engine=ENGINE,
        engine_version=f"torch {torch.__version__}",
        created_unix=int(time.time()),
        command="python3 " + " ".join(shlex.quote(a) for a in [sys.argv[0]] + (argv if argv is not None
                                                                                else sys.argv[1:])),
        device=device_info(device),
        settings=dict(
            shape="Llama-3.2-1B attention (32 q heads, 8 kv heads, head_dim 64)"
            if (H, KV, D) == (32, 8, 64) else "custom",
            batch=B, n_heads=H, n_kv_heads=KV, head_dim=D, dtype=args.dtype, causal=True, scale=scale,
            t=args.t, warmup=args.warmup, repeats=args.repeats,
            inner="auto" if args.inner is None else args.inner, min_sample_ms=args.min_sample_ms,
            seed=args.seed, with_probs=args.with_probs, max_probs_gib=args.max_probs_gib,
            sdpa_backend_requested=args.backend,
            flops_formula=FLOPS_FORMULA,
            probs_bytes_formula=PROBS_BYTES_FORMULA,
            timing=("cuda events around `inner` back-to-back calls after torch.cuda.synchronize(); "
                    "ms per call = elapsed / inner; median/p10/p90 over `repeats` samples"
                    if device.type == "cuda" else
                    "perf_counter around `inner` back-to-back calls (CPU smoke test)"),
            layout="q [batch, n_heads, T, head_dim], k/v [batch, n_kv_heads, T, head_dim], contiguous, "
                   "standard normal",
            sdpa_method="F.scaled_dot_product_attention(q, k, v, is_causal=True[, enable_gqa=True]) under "
                        "sdpa_kernel(backend); output only",
            eager_method="transformers eager_attention_forward: matmul(q, k^T) * scale + additive causal mask, "
                         "softmax(dim=-1, dtype=float32).to(dtype), matmul(p, v); returns (o, p). K/V expanded "
                         "to n_heads (repeat_kv) and mask built outside the timed region",
            peak_memory="torch.cuda.max_memory_allocated over the timed samples (inputs included)"
            if device.type == "cuda" else None,
        ),
        results=[],
        checks=[],
        not_measured=[],
    )
    log(f"torch {torch.__version__} (CUDA {torch.version.cuda}); device {doc['device']['name']}; {args.dtype}; "
        f"B={B} H={H} KV={KV} D={D}; T={args.t}")

    fallback_noted = False
    with torch.inference_mode():
        for t in args.t:
            g = torch.Generator(device="cpu").manual_seed(args.seed + t)
            try:
                q = torch.randn(B, H, t, D, generator=g).to(device, dtype)
                k = torch.randn(B, KV, t, D, generator=g).to(device, dtype)
                v = torch.randn(B, KV, t, D, generator=g).to(device, dtype)
                k_rep = k.repeat_interleave(rep, dim=1) if rep > 1 else k
                v_rep = v.repeat_interleave(rep, dim=1) if rep > 1 else v
            except OOM as e:
                doc["not_measured"].append(f"T={t}: inputs: out of memory ({first_line(e)})")
                continue
            flops = causal_flops(B, H, D, t)

            # ---- fused SDPA
            o_sdpa = None
            sdpa_impl = None
            backends = [args.backend] + (["efficient"] if args.backend == "flash" else [])
            for backend in backends:
                try:
                    gqa_mode, o_sdpa = try_sdpa(q, k, v, k_rep, v_rep, backend, not args.no_enable_gqa)
                except OOM as e:
                    doc["not_measured"].append(f"T={t}: sdpa {backend}: out of memory ({first_line(e)})")
                    break
                except RuntimeError as e:
                    msg = f"T={t}: SDPA {backend} backend unavailable for these inputs ({first_line(e)})"
                    if backend == "flash" and "efficient" in backends:
                        if not fallback_noted:
                            print(f"NOTE: {msg}; falling back to SDPBackend.EFFICIENT_ATTENTION "
                                  "(rows are named sdpa_efficient)", flush=True)
                            fallback_noted = True
                        doc["not_measured"].append(msg + "; measured EFFICIENT_ATTENTION instead")
                        continue
                    doc["not_measured"].append(msg)
                    break
                use_gqa = gqa_mode == "enable_gqa"
                kk, vv = (k, v) if use_gqa else (k_rep, v_rep)

                def fn(kk=kk, vv=vv, backend=backend, use_gqa=use_gqa):
                    return sdpa_call(q, kk, vv, backend, use_gqa)

                try:
                    m = measure(fn, timer, args)
                except OOM as e:
                    doc["not_measured"].append(f"T={t}: sdpa {backend}: out of memory ({first_line(e)})")
                    o_sdpa = None
                    break
                doc["results"].append(dict(
                    impl=f"sdpa_{backend}", backend=backend, gqa=gqa_mode, t=t, batch=B, n_heads=H,
                    n_kv_heads=KV, head_dim=D, dtype=args.dtype, **m,
                    tflops=flops / (m["median_ms"] / 1e3) / 1e12 if m["median_ms"] > 0 else None))
                sdpa_impl = f"sdpa_{backend}"
                log(f"   T={t}: sdpa_{backend} ({gqa_mode}) {m['median_ms']:.4g} ms (inner {m['inner']})")
                break

            # ---- eager, probabilities materialised
            o_eager = None
            if args.with_probs:
                need = probs_bytes(B, H, t, elem)
                if need > args.max_probs_gib * 2**30:
                    doc["not_measured"].append(
                        f"T={t}: eager_probs skipped (T x T tensors need {need / 2**30:.3g} GiB > --max-probs-gib "
                        f"{args.max_probs_gib:g})")
                else:
                    try:
                        mask = torch.full((t, t), torch.finfo(dtype).min, dtype=dtype, device=device).triu(1)
                        mask = mask[None, None]

                        def efn(mask=mask):
                            return eager_probs(q, k_rep, v_rep, mask, scale)

                        m = measure(efn, timer, args)
                        o_eager, p_eager = efn()
                        assert p_eager.shape == (B, H, t, t)
                        del p_eager, mask
                        doc["results"].append(dict(
                            impl="eager_probs", backend="eager",
                            gqa="repeat_kv_outside_timing" if rep > 1 else "none (n_kv_heads == n_heads)", t=t, batch=B,
                            n_heads=H, n_kv_heads=KV, head_dim=D, dtype=args.dtype, **m,
                            tflops=flops / (m["median_ms"] / 1e3) / 1e12 if m["median_ms"] > 0 else None,
                            probs_bytes_estimate=need))
                        log(f"   T={t}: eager_probs {m['median_ms']:.4g} ms (inner {m['inner']})")
                    except OOM as e:
                        doc["not_measured"].append(f"T={t}: eager_probs: out of memory ({first_line(e)})")
                        o_eager = None
            if sdpa_impl is not None and o_sdpa is not None and o_eager is not None:
                doc["checks"].append(dict(t=t, what=f"{sdpa_impl} vs eager_probs output",
                                          max_abs_diff=max_abs_diff(o_sdpa, o_eager)))
            del q, k, v, k_rep, v_rep, o_sdpa, o_eager
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if args.out:
                write_json(args.out, doc)  # partial results survive a later crash

        if not doc["checks"]:
            try:
                c = reference_check(args, device, dtype, args.seed)
                if c:
                    doc["checks"].append(dict(t=c["t"], what=f"sdpa_{c['backend']} ({c['gqa']}) vs {c['reference']}",
                                              max_abs_diff=c["max_abs_diff"]))
            except OOM:
                pass

    if args.out:
        write_json(args.out, doc)
        log(f"wrote {args.out}")
    print_table(doc)
    return 0 if doc["results"] else 1


if __name__ == "__main__":
    sys.exit(main())
