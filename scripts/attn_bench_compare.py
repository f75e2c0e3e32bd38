#!/usr/bin/env python3
"""Merge an attnscope attention-kernel benchmark and a torch SDPA one into one Markdown table.

    python3 scripts/attn_bench_compare.py attn_attnscope.json attn_sdpa.json [--out attn_compare.md]

Both files follow the schema "attnscope-attn-bench/1": one is written by `attnscope bench-attention --json`
("engine": "attnscope"), the other by `scripts/bench_sdpa.py --out` ("engine": "torch-sdpa"). They may come in
either order; the "engine" field says which is which. Only the Python standard library is needed.

Rows are matched by (batch, T, n_heads, n_kv_heads, head_dim, dtype); each distinct (batch, heads, head_dim,
dtype) gets its own table, one line per T. Columns: median ms and TFLOP/s of every impl:
    attnscope  prefill              fused kernel, output + lse
               prefill_stats        + entropy/max computed in the same pass
               prefill_probs_stats  + second-pass reductions over the probabilities
               prefill_weights      + exact f32 weights of all heads written out
    torch      sdpa_flash           F.scaled_dot_product_attention, flash backend (output only)
               eager_probs          eager softmax(QK^T*scale + mask) -> P, P V; P materialised
(impls not in this list are appended as extra columns), and two time ratios:
    prefill / sdpa_flash             attnscope's fused kernel vs torch flash (> 1: attnscope slower)
    eager_probs / prefill_weights    what getting P costs today vs attnscope with weights (> 1: attnscope faster)
If bench_sdpa.py had to fall back to the memory-efficient backend, its rows are named sdpa_efficient; the
first ratio then uses them and the table says so. A row missing on either side is shown as "—".

The ratios only mean something when both files come from the same GPU, dtype and FLOP formula; the script
prints both devices and warns (stderr and the Markdown) when they differ.
"""

import argparse
import json
import os
import sys
import tempfile

SCHEMA = "attnscope-attn-bench/1"
ATTNSCOPE_IMPLS = ["prefill", "prefill_stats", "prefill_probs_stats", "prefill_weights"]
TORCH_IMPLS = ["sdpa_flash", "sdpa_efficient", "eager_probs"]
DASH = "—"
FLOPS_FORMULA = "4 * batch * n_heads * head_dim * T*(T+1)/2"


def causal_flops(group, t):
    batch, n_heads, _, head_dim, _ = group
    return 4 * batch * n_heads * head_dim * t * (t + 1) / 2


def load(path):
    try:
        with open(path) as f:
            doc = json.load(f)
    except OSError as e:
        raise SystemExit(f"error: cannot read {path}: {e.strerror}")
    except ValueError as e:
        raise SystemExit(f"error: {path}: not valid JSON ({e})")
    if not isinstance(doc, dict):
        raise SystemExit(f"error: {path}: expected a JSON object at the top level")
    if doc.get("schema") != SCHEMA:
        print(f"warning: {path}: schema is {doc.get('schema')!r}, expected {SCHEMA!r}", file=sys.stderr)
    return doc


def fmt_ms(x):
    if not isinstance(x, (int, float)):
        return DASH
    if x < 0.1:
        return f"{x:.4f}"
    if x < 10:
        return f"{x:.3f}"
    return f"{x:.1f}" if x < 1000 else f"{x:.0f}"


def fmt_tflops(x):
    if not isinstance(x, (int, float)):
        return DASH
    return f"{x:.1f}" if x >= 1 else f"{x:.3g}"


def fmt_ratio(x):
    return DASH if x is None else f"{x:.2f}x"


def ratio(num, den):
    if isinstance(num, (int, float)) and isinstance(den, (int, float)) and num > 0 and den > 0:
        return num / den
    return None


def norm(s):
    return None if s is None else " ".join(str(s).lower().split())


def dev_str(doc):
    d = doc.get("device") or {}
    parts = [f"{d.get('kind', '?')} {d.get('name', '?')}"]
    for key, label in (("compute_capability", "sm"), ("driver", "driver"), ("cuda", "CUDA"), ("torch", "torch")):
        if d.get(key):
            parts.append(f"{label} {d[key]}")
    return ", ".join(parts)


def rows(doc, path):
    """(group key, t) -> impl -> row; group key = (batch, n_heads, n_kv_heads, head_dim, dtype)."""
    out = {}
    for i, r in enumerate(doc.get("results") or []):
        try:
            g = (int(r.get("batch", 1)), int(r["n_heads"]), int(r["n_kv_heads"]), int(r["head_dim"]),
                 str(r["dtype"]))
            key = (g, int(r["t"]))
            impl = str(r["impl"])
        except (KeyError, TypeError, ValueError) as e:
            print(f"warning: {path}: results[{i}] lacks a field ({e}); skipped", file=sys.stderr)
            continue
        if impl in out.setdefault(key, {}):
            print(f"warning: {path}: duplicate {impl} at {key}; the last one is used", file=sys.stderr)
        out[key][impl] = r
    return out


def compare(a_doc, t_doc, a_path, t_path):
    warnings = []
    ad, td = a_doc.get("device") or {}, t_doc.get("device") or {}
    if norm(ad.get("name")) != norm(td.get("name")):
        warnings.append(f"DIFFERENT devices: attnscope {ad.get('name')!r} vs torch {td.get('name')!r}")
    if ad.get("kind") and td.get("kind") and ad.get("kind") != td.get("kind"):
        warnings.append(f"DIFFERENT device kinds: attnscope {ad.get('kind')!r} vs torch {td.get('kind')!r}")
    af = (a_doc.get("settings") or {}).get("flops_formula")
    tf = (t_doc.get("settings") or {}).get("flops_formula")

    ar, tr = rows(a_doc, a_path), rows(t_doc, t_path)
    # The formula strings may be worded differently; check the numbers instead: tflops * median time should give
    # the causal FLOP count 4 * batch * n_heads * head_dim * T*(T+1)/2 on both sides.
    for eng, rr in (("attnscope", ar), ("torch", tr)):
        off = []
        for (g, t), impls in rr.items():
            for impl, r in impls.items():
                ms, tfl = r.get("median_ms"), r.get("tflops")
                if isinstance(ms, (int, float)) and isinstance(tfl, (int, float)) and ms > 0 and tfl > 0:
                    implied = tfl * 1e12 * ms / 1e3
                    off.append(implied / causal_flops(g, t))
        bad = [x for x in off if abs(x - 1) > 0.02]
        if bad:
            warnings.append(f"{eng}: {len(bad)} of {len(off)} rows have tflops x median_ms that differ from "
                            f"{FLOPS_FORMULA} (factor {min(bad):.3g}..{max(bad):.3g}); TFLOP/s columns of the two "
                            "engines are not comparable")
    groups = sorted({g for g, _ in ar} | {g for g, _ in tr})
    a_groups, t_groups = {g for g, _ in ar}, {g for g, _ in tr}
    if ar and tr and not (a_groups & t_groups):
        warnings.append("no (batch, heads, head_dim, dtype) in common: nothing can be paired "
                        f"(attnscope {sorted(a_groups)}, torch {sorted(t_groups)})")

    lines = ["# Attention kernel: attnscope vs torch SDPA", ""]
    lines.append(f"- attnscope: `{a_path}` — {a_doc.get('engine_version', '?')} — {dev_str(a_doc)}")
    lines.append(f"- torch: `{t_path}` — {t_doc.get('engine_version', '?')} — {dev_str(t_doc)}")
    lines.append(f"- TFLOP/s = FLOPs / median time, as each file reports it; expected FLOPs = {FLOPS_FORMULA} "
                 f"(attnscope: {af or '?'}; torch: {tf or '?'})")
    lines.append("")
    if warnings:
        lines.append("> **WARNING**")
        for w in warnings:
            lines.append(f"> - **{w}**")
        lines.append("")
    lines.append("Median ms and TFLOP/s per impl. *prefill / flash* = attnscope prefill time / torch SDPA flash "
                 "time (> 1: attnscope slower). *eager_probs / weights* = torch eager-with-probabilities time / "
                 f"attnscope prefill_weights time (> 1: attnscope faster). `{DASH}` = not measured on that side.")
    lines.append("")

    present = set()
    for d in (ar, tr):
        for impls in d.values():
            present |= set(impls)
    extra = sorted(present - set(ATTNSCOPE_IMPLS) - set(TORCH_IMPLS))
    used_efficient = False
    for g in groups:
        batch, h, kv, hd, dt = g
        ts = sorted({t for gg, t in list(ar) + list(tr) if gg == g})
        group_impls = set()
        for t in ts:
            group_impls |= set(ar.get((g, t), {})) | set(tr.get((g, t), {}))
        torch_cols = ["sdpa_flash"] + (["sdpa_efficient"] if "sdpa_efficient" in group_impls else []) + ["eager_probs"]
        impls = [(i, "attnscope") for i in ATTNSCOPE_IMPLS] + [(i, "torch") for i in torch_cols] + \
                [(i, "?") for i in extra if i in group_impls]
        lines.append(f"## batch {batch}, {h} query heads / {kv} KV heads, head_dim {hd}, {dt}, causal")
        lines.append("")
        hdr = ["T"]
        for i, _ in impls:
            hdr += [f"{i} ms", f"{i} TFLOP/s"]
        hdr += ["prefill / flash", "eager_probs / weights"]
        lines.append("| " + " | ".join(hdr) + " |")
        lines.append("|" + "|".join(["---:"] * len(hdr)) + "|")
        for t in ts:
            a, tt = ar.get((g, t), {}), tr.get((g, t), {})
            both = {**tt, **a}  # impl names do not overlap between the engines
            row = [str(t)]
            for i, _ in impls:
                r = both.get(i, {})
                row += [fmt_ms(r.get("median_ms")), fmt_tflops(r.get("tflops"))]
            flash = tt.get("sdpa_flash")
            mark = ""
            if flash is None and "sdpa_efficient" in tt:
                flash, mark, used_efficient = tt["sdpa_efficient"], " (efficient)", True
            r1 = ratio(a.get("prefill", {}).get("median_ms"), (flash or {}).get("median_ms"))
            r2 = ratio(tt.get("eager_probs", {}).get("median_ms"), a.get("prefill_weights", {}).get("median_ms"))
            row += [fmt_ratio(r1) + (mark if r1 is not None else ""), fmt_ratio(r2)]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    if not groups:
        lines.append("_no results in either file_")
        lines.append("")
    if used_efficient:
        lines.append("*(efficient)*: torch's flash backend was unavailable at that T; the ratio uses SDPA's "
                     "memory-efficient backend instead.")
        lines.append("")

    checks = [("torch", c) for c in t_doc.get("checks") or []] + [("attnscope", c) for c in a_doc.get("checks") or []]
    if checks:
        lines.append("## Checks")
        lines.append("")
        for eng, c in checks:
            if isinstance(c, dict):
                diff = c.get("max_abs_diff")
                diff = f"{diff:.3g}" if isinstance(diff, (int, float)) else "?"
                lines.append(f"- {eng}: T={c.get('t', '?')}: {c.get('what', '?')}: max |diff| = {diff}")
            else:
                lines.append(f"- {eng}: {c}")
        lines.append("")
    nm = [("attnscope", s) for s in a_doc.get("not_measured") or []] + \
         [("torch", s) for s in t_doc.get("not_measured") or []]
    if nm:
        lines.append("## Not measured")
        lines.append("")
        for eng, s in nm:
            lines.append(f"- {eng}: {s}")
        lines.append("")
    return "\n".join(lines), warnings


def write_atomic(path, text):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".attn_compare.", suffix=".md", dir=d)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Markdown table of an attnscope and a torch SDPA attention-kernel benchmark "
                    "(schema attnscope-attn-bench/1), matched by (batch, T, heads, head_dim, dtype).",
        epilog="Ratios: attnscope prefill / torch sdpa_flash (time; > 1 means attnscope is slower) and torch "
               "eager_probs / attnscope prefill_weights (time; > 1 means attnscope is faster).")
    p.add_argument("files", nargs=2, metavar="FILE.json", help="one attnscope and one torch-sdpa JSON, any order")
    p.add_argument("--out", metavar="MD", help="also write the Markdown to this file (temp file + rename)")
    args = p.parse_args(argv)

    docs = [(path, load(path)) for path in args.files]
    attn = [(pa, d) for pa, d in docs if d.get("engine") == "attnscope"]
    other = [(pa, d) for pa, d in docs if d.get("engine") != "attnscope"]
    if len(attn) != 1:
        p.error("give exactly one file with \"engine\": \"attnscope\" and one from scripts/bench_sdpa.py "
                f"(engines: {[d.get('engine') for _, d in docs]})")
    (a_path, a_doc), (t_path, t_doc) = attn[0], other[0]
    if t_doc.get("engine") != "torch-sdpa":
        print(f"warning: {t_path}: engine {t_doc.get('engine')!r}, expected 'torch-sdpa'", file=sys.stderr)

    print(f"attnscope: {dev_str(a_doc)}", file=sys.stderr)
    print(f"torch:     {dev_str(t_doc)}", file=sys.stderr)
    md, warnings = compare(a_doc, t_doc, a_path, t_path)
    for w in warnings:
        print(f"WARNING: {w}", file=sys.stderr)
    print(md)
    if args.out:
        write_atomic(args.out, md + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
