"""Pure parts of scripts/bench_pair.py (standard library only, no torch): the case table, the order of the
calls, the ratio statistics, the machine description and the Markdown table.

A case measures one call on each engine: the attnscope request, the HF request, and how their results
compare. Time ratios are attnscope seconds / HF seconds of the same round (below 1: attnscope is faster);
decode ratios are attnscope tokens/s / HF tokens/s of the same round (above 1: attnscope is faster).
"""

import fnmatch
import os
import statistics
from dataclasses import dataclass, field

ENGINES = ("attnscope", "hf")

LLAMA_100M_T = (128, 512, 1024, 2048)
TINYLLAMA_T = (128, 512, 1024)
DECODE_SHAPES = ((1, 512), (1, 64), (8, 512))  # (batch, context)


@dataclass
class Case:
    """One paired measurement: a request per engine and how to compare their replies."""
    id: str
    model: str
    label: str
    requests: dict  # engine -> request (a JSON object of the line protocol)
    kind: str  # "time" (ratio of seconds) or "tok/s" (ratio of tokens per second)
    batch: int = 1
    target: str = "-"  # what the issue asks of the median ratio, e.g. "≤ 1.0"
    rounds: int = 0  # recorded rounds (set by the harness)
    samples: list = field(default_factory=list)  # dicts: round, first, attnscope_s, hf_s

    def value(self, seconds):
        """The figure an engine's reply stands for: seconds, or tokens/s for decode."""
        return self.batch / seconds if self.kind == "tok/s" else seconds


def default_cases(decode_steps):
    """The cases of issue #11 item 6, in table order."""
    cases = []
    for t in LLAMA_100M_T:
        for mode, hf_mode, what, target in (
                ("none", "sdpa", "none ÷ HF sdpa", "≤ 1.0"),
                ("stats", "sdpa", "stats ÷ HF sdpa", "-"),
                ("weights_all", "eager_output_attentions", "all weights ÷ HF eager+output_attentions",
                 "≤ 0.5" if t >= 1024 else "-")):
            short = mode.split("_")[0]
            cases.append(Case(
                id=f"llama-100m/prefill-{short}/T{t}", model="llama-100m",
                label=f"llama-100m prefill T={t}, {what}",
                requests=dict(attnscope=dict(op="prefill", t=t, mode=mode),
                              hf=dict(op="prefill", t=t, mode=hf_mode)),
                kind="time", target=target))
    for batch, ctx in DECODE_SHAPES:
        cases.append(Case(
            id=f"llama-100m/decode/b{batch}-ctx{ctx}", model="llama-100m",
            label=f"llama-100m decode batch {batch}, context {ctx}, tok/s attnscope ÷ HF",
            requests=dict(attnscope=dict(op="decode", batch=batch, context=ctx, steps=decode_steps, mode="none"),
                          hf=dict(op="decode", batch=batch, context=ctx, steps=decode_steps, mode="sdpa")),
            kind="tok/s", batch=batch, target="≥ 1.2"))
    for t in TINYLLAMA_T:
        cases.append(Case(
            id=f"tinyllama-1.1b/prefill-none/T{t}", model="tinyllama-1.1b",
            label=f"tinyllama-1.1b prefill T={t}, none ÷ HF sdpa",
            requests=dict(attnscope=dict(op="prefill", t=t, mode="none"), hf=dict(op="prefill", t=t, mode="sdpa")),
            kind="time", target="≤ 1.0"))
    return cases


def select_cases(cases, patterns):
    """The cases any pattern matches, in table order. A pattern with * ? [ is an fnmatch glob over the case
    id; any other pattern matches ids containing it. A pattern that matches nothing is an error."""
    if not patterns:
        return list(cases)
    chosen = set()
    for pat in patterns:
        glob = any(c in pat for c in "*?[")
        hits = [c.id for c in cases if (fnmatch.fnmatchcase(c.id, pat) if glob else pat in c.id)]
        if not hits:
            raise ValueError(f"--cases: {pat!r} matches no case (see --list-cases)")
        chosen.update(hits)
    return [c for c in cases if c.id in chosen]


def order_of_round(r):
    """The engines in call order in round r: attnscope first in even rounds, HF first in odd ones."""
    return ENGINES if r % 2 == 0 else ENGINES[::-1]


def ratio_of(case, sample):
    """attnscope / HF of one round: of seconds for "time", of tokens/s for "tok/s"."""
    return case.value(sample["attnscope_s"]) / case.value(sample["hf_s"])


def summary(values):
    """min / median / max / n of a list of numbers (median of an even count: mean of the middle two)."""
    return dict(min=min(values), median=statistics.median(values), max=max(values), n=len(values))


def case_summary(case):
    """The ratio statistics and each engine's median figure over the recorded rounds."""
    ratios = [ratio_of(case, s) for s in case.samples]
    return dict(ratio=summary(ratios),
                attnscope=statistics.median(case.value(s["attnscope_s"]) for s in case.samples),
                hf=statistics.median(case.value(s["hf_s"]) for s in case.samples))


def stats_vs_none(cases):
    """Per T where both are measured: attnscope stats / attnscope none of the same round ("stats ≤ 1.05×
    of none"). Returns (label, summary of ratios, median stats ms, median none ms) tuples."""
    by_id = {c.id: c for c in cases}
    out = []
    for c in cases:
        if "/prefill-stats/" not in c.id:
            continue
        none = by_id.get(c.id.replace("/prefill-stats/", "/prefill-none/"))
        if none is None:
            continue
        none_by_round = {s["round"]: s["attnscope_s"] for s in none.samples}
        pairs = [(s["attnscope_s"], none_by_round[s["round"]]) for s in c.samples if s["round"] in none_by_round]
        if not pairs:
            continue
        t = c.requests["attnscope"]["t"]
        out.append((f"{c.model} prefill T={t}, attnscope stats ÷ attnscope none", summary([a / b for a, b in pairs]),
                    statistics.median(a for a, _ in pairs) * 1e3, statistics.median(b for _, b in pairs) * 1e3))
    return out


def target_met(target, ratio):
    """"yes" / "no" for a target such as "≤ 1.0" or "≥ 1.2" against the median ratio, "-" without one."""
    if target == "-":
        return "-"
    op, bound = target.split()
    ok = ratio <= float(bound) if op == "≤" else ratio >= float(bound)
    return "yes" if ok else "no"


def cpu_description(cpuinfo_text, usable_cores):
    """Model name, logical CPUs listed, usable cores and the presence of avx512f / avx2 / fma."""
    name, flags, cpus = None, set(), 0
    for line in cpuinfo_text.splitlines():
        key, _, val = line.partition(":")
        key = key.strip()
        if key == "processor":
            cpus += 1
        elif key == "model name" and name is None:
            name = val.strip()
        elif key == "flags" and not flags:
            flags = set(val.split())
    return dict(model=name or "unknown", logical_cpus=cpus, usable_cores=usable_cores,
                flags={f: f in flags for f in ("avx512f", "avx2", "fma")})


def machine():
    """The CPU of this machine (from /proc/cpuinfo), its usable cores and total memory."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        text = ""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    desc = cpu_description(text, usable)
    try:
        with open("/proc/meminfo") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
        desc["memory_gib"] = round(kb / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        desc["memory_gib"] = None
    return desc


def fmt_figure(case, v):
    return f"{v:.1f} tok/s" if case.kind == "tok/s" else f"{v * 1e3:.1f} ms"


def markdown(cases, header):
    """The table (one row per case, then the stats ÷ none rows) under the header lines."""
    lines = list(header) + ["",
                            "| case | attnscope (median) | HF (median) | ratio median | min | max | rounds | target"
                            " | met (median) |",
                            "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for c in cases:
        if not c.samples:
            continue
        s = case_summary(c)
        r = s["ratio"]
        lines.append(f"| {c.label} | {fmt_figure(c, s['attnscope'])} | {fmt_figure(c, s['hf'])} | "
                     f"**{r['median']:.2f}** | {r['min']:.2f} | {r['max']:.2f} | {r['n']} | {c.target} | "
                     f"{target_met(c.target, r['median'])} |")
    for label, r, stats_ms, none_ms in stats_vs_none(cases):
        lines.append(f"| {label} | {stats_ms:.1f} ms | (none {none_ms:.1f} ms) | **{r['median']:.2f}** | "
                     f"{r['min']:.2f} | {r['max']:.2f} | {r['n']} | ≤ 1.05 | {target_met('≤ 1.05', r['median'])} |")
    return "\n".join(lines) + "\n"
