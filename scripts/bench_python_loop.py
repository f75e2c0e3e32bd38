#!/usr/bin/env python3
"""The notebook loop of issue #13, in one process: 20 prompts through ../shared's stories260K, capturing
every layer's attention as numpy, with attnscope's Python module and with HF transformers eager
(`output_attentions=True`) side by side.

Run from the repository root, in a venv holding both (scripts/requirements-bench.txt plus the module):

    pip install ./crates/attnscope-py
    python scripts/bench_python_loop.py --threads 2 --rounds 15

Each round times the whole 20-prompt loop once per engine, back to back, the engine going first alternating
each round, after `--warmup` unrecorded rounds. A loop is what a notebook cell does per prompt:
  attnscope: r = m.run(prompt, capture=C); w = r.attention(0)           (numpy [layers, heads, T, T])
  HF:        ids = tok(prompt); out = model(**ids, output_attentions=True)
             w = torch.stack(out.attentions)[:, 0].numpy()              (numpy [layers, heads, T, T])
Before timing, the two engines' weights are checked to agree (≤ 1e-5) on every prompt.
Prints a Markdown table: ms per prompt (median over rounds) and the per-round ratio HF ÷ attnscope
(min / median / max; above 1: attnscope is faster).
"""

import argparse
import os
import platform
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SUBJECTS = ["a little dog", "a small girl named Lily", "a big red ball", "an old cat", "a happy bird"]
PLACES = ["in the park", "by the sea", "at school", "under a tree"]


def prompts(n: int):
    """`n` TinyStories-style prompts of varied length (deterministic)."""
    out = []
    for i in range(n):
        s, p = SUBJECTS[i % len(SUBJECTS)], PLACES[(i // len(SUBJECTS)) % len(PLACES)]
        text = f"Once upon a time, there was {s}. It liked to play {p}"
        out.append(text + (" with its friends every day." if i % 2 else "."))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(REPO, "..", "shared", "models", "stories260K"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--capture", default="weights", help="attnscope capture (weights = what HF returns)")
    args = ap.parse_args()
    if not os.path.exists(os.path.join(args.model, "config.json")):
        print(f"error: {args.model}/config.json not found (../shared's stories260K?)", file=sys.stderr)
        return 1

    import numpy as np
    import torch
    import transformers
    import attnscope

    torch.set_num_threads(args.threads)
    attnscope.set_threads(args.threads)
    m = attnscope.load(args.model, device="cpu")
    tok = transformers.AutoTokenizer.from_pretrained(args.model)
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        args.model, attn_implementation="eager", dtype=torch.float32).eval()
    texts = prompts(args.prompts)

    def ours():
        out = []
        for text in texts:
            r = m.run(text, capture=args.capture)
            out.append(r.attention(0))
        return out

    def theirs():
        out = []
        with torch.inference_mode():
            for text in texts:
                ids = tok(text, return_tensors="pt")
                o = hf(**ids, output_attentions=True)
                out.append(torch.stack(o.attentions)[:, 0].numpy())
        return out

    worst = max(float(np.abs(a - b).max()) for a, b in zip(ours(), theirs()))
    if worst > 1e-5:
        print(f"error: attnscope and HF weights differ by {worst:.2e}", file=sys.stderr)
        return 1
    times = {"attnscope": [], "hf": []}
    for rnd in range(args.warmup + args.rounds):
        order = [("attnscope", ours), ("hf", theirs)]
        if rnd % 2:
            order.reverse()
        for name, fn in order:
            start = time.perf_counter()
            fn()
            if rnd >= args.warmup:
                times[name].append(time.perf_counter() - start)
        print(f"round {rnd + 1}/{args.warmup + args.rounds}", file=sys.stderr)
    ratios = [h / a for a, h in zip(times["attnscope"], times["hf"])]
    per = {k: statistics.median(v) / len(texts) * 1e3 for k, v in times.items()}
    lengths = [len(m.tokenize(t)) for t in texts]
    print(f"{len(texts)} prompts of {min(lengths)}–{max(lengths)} tokens, stories260K, "
          f"{args.threads} threads, {args.rounds} rounds; {platform.processor() or platform.machine()}; "
          f"torch {torch.__version__}, transformers {transformers.__version__}, attnscope "
          f"{attnscope.__version__}; max |Δw| = {worst:.1e}\n")
    print("| engine | ms per prompt (median) |\n|---|---|")
    print(f"| attnscope `m.run(p, capture={args.capture!r})` + `r.attention(0)` | {per['attnscope']:.3f} |")
    print(f"| HF eager `output_attentions=True` + stack to numpy | {per['hf']:.3f} |")
    print(f"\nHF ÷ attnscope per round: min {min(ratios):.2f} / median {statistics.median(ratios):.2f} "
          f"/ max {max(ratios):.2f} (above 1: attnscope is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
