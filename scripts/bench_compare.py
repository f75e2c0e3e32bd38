#!/usr/bin/env python3
"""Merge an attnscope bench JSON and an HF transformers bench JSON into one Markdown table of ratios.

    python scripts/bench_compare.py bench-attnscope.json bench-hf.json [--out table.md]

The files may come in either order; each one's "engine" field ("attnscope" / "hf-transformers") says which is
which. Both follow the schema "attnscope-bench/1" (written by `attnscope bench --json` and
`scripts/bench_hf.py --out`).

Pairs, per model (matched by the "model" field):
  prefill, per T (batch 1):
    attnscope none              vs HF sdpa                     time ratio attnscope/HF   (< 1: attnscope faster)
    attnscope stats             vs HF sdpa                     time ratio attnscope/HF   (< 1: attnscope faster)
    attnscope weights_all       vs HF eager_output_attentions  speedup HF/attnscope      (> 1: attnscope faster)
    attnscope weights_one_layer vs HF eager_output_attentions  speedup HF/attnscope      (> 1: attnscope faster)
  decode, per batch (and prompt context):
    attnscope none              vs HF generate_sdpa                     tokens/s ratio attnscope/HF (> 1: faster)
    attnscope weights_all       vs HF generate_eager_output_attentions  tokens/s ratio attnscope/HF (> 1: faster)
A pair missing on either side is shown as "-". A second table shows each engine's own capture overhead
(median time of a capture mode / its no-capture baseline, as measured in the same run).

Ratios are only meaningful when both files were measured on the same device, dtype and thread count; the
script prints both devices and warns loudly (stderr and the Markdown) when they differ.
"""

import argparse
import json
import re
import sys

SCHEMA = "attnscope-bench/1"

PREFILL_PAIRS = [  # (attnscope mode, HF mode, kind)
    ("none", "sdpa", "time_ratio"),
    ("stats", "sdpa", "time_ratio"),
    ("weights_all", "eager_output_attentions", "speedup"),
    ("weights_one_layer", "eager_output_attentions", "speedup"),
]
DECODE_PAIRS = [
    ("none", "generate_sdpa"),
    ("weights_all", "generate_eager_output_attentions"),
]
OVERHEAD_MODES = {
    "attnscope": (["stats", "weights_all", "weights_one_layer"], ["none"]),
    "hf-transformers": (["eager", "eager_output_attentions"], ["sdpa"]),
}


def load(path):
    with open(path) as f:
        doc = json.load(f)
    if doc.get("schema") != SCHEMA:
        print(f"warning: {path}: schema is {doc.get('schema')!r}, expected {SCHEMA!r}", file=sys.stderr)
    return doc


def norm_name(name):
    """Device name without a trailing "(N threads)" (threads are compared separately), case/space-folded."""
    if name is None:
        return None
    return " ".join(re.sub(r"\s*\(\d+ threads?\)\s*$", "", str(name)).lower().split())


def dev_str(doc):
    d = doc.get("device") or {}
    return (f"{d.get('kind', '?')} — {d.get('name', '?')} — dtype {d.get('compute_dtype', '?')} — "
            f"threads {d.get('threads', '?')}" + (f" — driver {d['driver']}" if d.get("driver") else ""))


def fmt_ms(x):
    if x is None:
        return "-"
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 1000 else f"{x:.0f}"


def fmt_ratio(x, suffix="x"):
    return "-" if x is None else f"{x:.2f}{suffix}"


def fmt_tps(x):
    if x is None:
        return "-"
    return f"{x:.1f}" if x < 1000 else f"{x:.0f}"


def index_models(doc):
    return {m["model"]: m for m in doc.get("models", [])}


def prefill_index(m):
    """(t, batch) -> mode -> row. Prefill rows have no batch in the schema (batch 1); accept one if present."""
    out = {}
    for r in (m or {}).get("prefill", []):
        out.setdefault((r["t"], r.get("batch", 1)), {})[r["mode"]] = r
    return out


def decode_index(m):
    out = {}
    for r in (m or {}).get("decode", []):
        out.setdefault((r["batch"], r["context"]), {})[r["mode"]] = r
    return out


def compare(a_doc, h_doc, a_path, h_path):
    lines = []
    warnings = []
    ad, hd = a_doc.get("device") or {}, h_doc.get("device") or {}
    for key, what in [("kind", "device kinds"), ("name", "devices"), ("compute_dtype", "compute dtypes"),
                      ("threads", "thread counts")]:
        x, y = ad.get(key), hd.get(key)
        if key == "name":
            x, y = norm_name(x), norm_name(y)
        if x != y:
            warnings.append(f"DIFFERENT {what}: attnscope {ad.get(key)!r} vs HF {hd.get(key)!r}")
    a_set, h_set = a_doc.get("settings") or {}, h_doc.get("settings") or {}
    for key in ["decode_steps", "warmup", "repeats"]:
        if a_set.get(key) != h_set.get(key):
            warnings.append(f"different settings.{key}: attnscope {a_set.get(key)!r} vs HF {h_set.get(key)!r}")
    if warnings and any(w.startswith("DIFFERENT") for w in warnings):
        warnings.insert(0, "RATIOS BELOW COMPARE DIFFERENT HARDWARE/DTYPE/THREADS AND ARE NOT MEANINGFUL")

    lines.append("# attnscope vs Hugging Face transformers")
    lines.append("")
    lines.append(f"- attnscope: `{a_path}` — {a_doc.get('engine_version', '?')} — {dev_str(a_doc)}")
    lines.append(f"- HF: `{h_path}` — {h_doc.get('engine_version', '?')} — {dev_str(h_doc)}")
    lines.append(f"- settings: attnscope {json.dumps({k: a_set.get(k) for k in ('warmup', 'repeats', 'decode_steps', 'decode_context')})}; "
                 f"HF {json.dumps({k: h_set.get(k) for k in ('warmup', 'repeats', 'decode_steps', 'decode_context')})}")
    lines.append("")
    if warnings:
        lines.append("> **WARNING**")
        for w in warnings:
            lines.append(f"> - **{w}**")
        lines.append("")
    lines.append("Prefill (batch 1, median ms): *ratio* = attnscope time / HF time (< 1: attnscope faster); "
                 "*speedup* = HF time / attnscope time (> 1: attnscope faster). "
                 "Decode: tokens/s, *ratio* = attnscope tok/s / HF tok/s (> 1: attnscope faster). "
                 "`-` = not measured on one side.")
    lines.append("")

    am, hm = index_models(a_doc), index_models(h_doc)
    names = list(am) + [n for n in hm if n not in am]
    for name in names:
        a, h = am.get(name), hm.get(name)
        lines.append(f"## {name}")
        if a is None or h is None:
            lines.append("")
            lines.append(f"_only in the {'attnscope' if h is None else 'HF'} file_")
        elif a.get("parameters") != h.get("parameters"):
            msg = f"parameter counts differ: attnscope {a.get('parameters')} vs HF {h.get('parameters')}"
            lines.append("")
            lines.append(f"> **WARNING: {msg}** (different shapes?)")
            print(f"WARNING: {name}: {msg}", file=sys.stderr)
        lines.append("")

        ap, hp = prefill_index(a), prefill_index(h)
        keys = sorted(set(ap) | set(hp))
        if keys:
            hdr = ["T"]
            for am_, hm_, kind in PREFILL_PAIRS:
                hdr += [f"as {am_}", f"HF {hm_}", "ratio" if kind == "time_ratio" else "speedup"]
            lines.append("| " + " | ".join(hdr) + " |")
            lines.append("|" + "|".join(["---:"] * len(hdr)) + "|")
            for key in keys:
                t, b = key
                row = [str(t) if b == 1 else f"{t} (b{b})"]
                for am_, hm_, kind in PREFILL_PAIRS:
                    x = ap.get(key, {}).get(am_, {}).get("median_ms")
                    y = hp.get(key, {}).get(hm_, {}).get("median_ms")
                    r = None
                    if x and y:
                        r = x / y if kind == "time_ratio" else y / x
                    row += [fmt_ms(x), fmt_ms(y), fmt_ratio(r)]
                lines.append("| " + " | ".join(row) + " |")
            lines.append("")

        adx, hdx = decode_index(a), decode_index(h)
        keys = sorted(set(adx) | set(hdx))
        if keys:
            hdr = ["batch", "context"]
            for am_, hm_ in DECODE_PAIRS:
                hdr += [f"as {am_} tok/s", f"HF {hm_} tok/s", "ratio"]
            lines.append("| " + " | ".join(hdr) + " |")
            lines.append("|" + "|".join(["---:"] * len(hdr)) + "|")
            for key in keys:
                b, ctx = key
                row = [str(b), str(ctx)]
                for am_, hm_ in DECODE_PAIRS:
                    x = adx.get(key, {}).get(am_, {}).get("tokens_per_s")
                    y = hdx.get(key, {}).get(hm_, {}).get("tokens_per_s")
                    row += [fmt_tps(x), fmt_tps(y), fmt_ratio(x / y if (x and y) else None)]
                lines.append("| " + " | ".join(row) + " |")
            lines.append("")

        # Capture overhead within each engine (same-run baseline; does not depend on the other file).
        ov_rows = []
        for eng, m in (("attnscope", a), ("hf-transformers", h)):
            if m is None:
                continue
            caps, _ = OVERHEAD_MODES[eng]
            for key, modes in sorted(prefill_index(m).items()):
                cells = [f"{c} {fmt_ratio(modes[c].get('overhead_vs_none'))}" for c in caps if c in modes]
                if cells:
                    ov_rows.append(f"| {eng} | prefill T={key[0]} | " + ", ".join(cells) + " |")
            caps_d = caps if eng == "attnscope" else ["generate_eager", "generate_eager_output_attentions"]
            for key, modes in sorted(decode_index(m).items()):
                cells = [f"{c} {fmt_ratio(modes[c].get('overhead_vs_none'))}" for c in caps_d if c in modes]
                if cells:
                    ov_rows.append(f"| {eng} | decode batch={key[0]} ctx={key[1]} | " + ", ".join(cells) + " |")
        if ov_rows:
            lines.append("Capture overhead within each engine (median time / own no-capture baseline: "
                         "attnscope `none`, HF `sdpa` / `generate_sdpa`):")
            lines.append("")
            lines.append("| engine | case | overhead |")
            lines.append("|---|---|---|")
            lines.extend(ov_rows)
            lines.append("")

    nm = [("attnscope", s) for s in a_doc.get("not_measured", [])] + \
         [("HF", s) for s in h_doc.get("not_measured", [])]
    if nm:
        lines.append("## Not measured")
        lines.append("")
        for eng, s in nm:
            lines.append(f"- {eng}: {s}")
        lines.append("")
    return "\n".join(lines), warnings


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Side-by-side Markdown table of attnscope vs HF transformers bench JSONs (either order).",
        epilog="Pairs: prefill none/stats vs HF sdpa (time ratio attnscope/HF), weights_all/weights_one_layer vs "
               "HF eager_output_attentions (speedup HF/attnscope); decode none vs generate_sdpa, weights_all vs "
               "generate_eager_output_attentions (tokens/s ratio attnscope/HF).")
    p.add_argument("files", nargs=2, metavar="FILE.json", help="one attnscope and one hf-transformers bench JSON")
    p.add_argument("--out", help="write the Markdown here instead of stdout")
    args = p.parse_args(argv)

    docs = [(path, load(path)) for path in args.files]
    by_engine = {}
    for path, doc in docs:
        eng = doc.get("engine")
        if eng not in ("attnscope", "hf-transformers"):
            p.error(f"{path}: unknown engine {eng!r} (expected 'attnscope' or 'hf-transformers')")
        if eng in by_engine:
            p.error(f"both files are from engine {eng!r}; give one attnscope and one hf-transformers file")
        by_engine[eng] = (path, doc)
    (a_path, a_doc), (h_path, h_doc) = by_engine["attnscope"], by_engine["hf-transformers"]

    print(f"attnscope device: {dev_str(a_doc)}", file=sys.stderr)
    print(f"HF device:        {dev_str(h_doc)}", file=sys.stderr)
    md, warnings = compare(a_doc, h_doc, a_path, h_path)
    for w in warnings:
        print(f"WARNING: {w}", file=sys.stderr)
    if args.out:
        with open(args.out, "w") as f:
            f.write(md + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(md)


if __name__ == "__main__":
    main()
