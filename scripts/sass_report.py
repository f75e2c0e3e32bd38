#!/usr/bin/env python3
"""Static SASS proxy of the attention kernels (called by scripts/sass-report.sh; see its header).

usage: sass_report.py ARCH PTXAS_LOG SASS [SASS ...]

PTXAS_LOG is the `ptxas -v` output of every cubin (registers, spills, static shared memory per kernel);
each SASS is `nvdisasm -c` output. Prints one markdown table row per kernel of interest.

Main loop: every backward branch (a BRA whose target label lies at or before it) closes a loop region
[target, branch]; branches to one target are merged into one region. Of the regions that contain HMMA
instructions, the innermost ones (containing no other HMMA-containing region) are the candidate loops.
The main loop is the candidate with the most HMMAs; among equals (the fast kernel has a loop over fully
visible K tiles and a second one over partial tiles, with the same mma work) the one with the fewest
instructions, i.e. the loop that runs for all but the diagonal / window-edge tiles of a long prefill.
Every other candidate is listed in the last column as `instructions/HMMAs`. Instructions are every SASS
instruction of the region except NOP.
"""

import re
import sys

FUNC_RE = re.compile(r"^\s*\.text\.([A-Za-z0-9_]+):\s*$")
LABEL_RE = re.compile(r"^(\.L_x_\d+):")
INSTR_RE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?);")
BRA_RE = re.compile(r"\bBRA(?:\.[A-Z.]+)?\s+(?:`\()?(\.L_x_\d+)")


def parse_sass(path):
    """{function: [(offset, text)], labels: {function: {label: offset}}}."""
    funcs, labels = {}, {}
    cur = None
    pending = []
    with open(path) as f:
        for line in f:
            m = FUNC_RE.match(line)
            if m:
                cur = m.group(1)
                funcs[cur] = []
                labels[cur] = {}
                pending = []
                continue
            if cur is None:
                continue
            m = LABEL_RE.match(line.strip())
            if m:
                pending.append(m.group(1))
                continue
            m = INSTR_RE.search(line)
            if m:
                off = int(m.group(1), 16)
                for lab in pending:
                    labels[cur][lab] = off
                pending = []
                funcs[cur].append((off, m.group(2).strip()))
    return funcs, labels


def opcode(text):
    t = text
    if t.startswith("@"):
        t = t.split(None, 1)[1] if " " in t else ""
    return t.split(None, 1)[0] if t else ""


def loops(instrs, labels):
    """Candidate loops as (instructions, hmmas), sorted main first."""
    regions = {}
    for off, text in instrs:
        m = BRA_RE.search(text)
        if m and opcode(text).startswith("BRA"):
            tgt = labels.get(m.group(1))
            if tgt is not None and tgt <= off:
                regions[tgt] = max(regions.get(tgt, off), off)
    stats = []
    for lo, hi in regions.items():
        body = [t for o, t in instrs if lo <= o <= hi]
        n = sum(1 for t in body if opcode(t) != "NOP")
        hm = sum(1 for t in body if opcode(t).startswith("HMMA"))
        if hm:
            stats.append((lo, hi, n, hm))
    inner = [
        r for r in stats
        if not any(o is not r and r[0] <= o[0] and o[1] <= r[1] and (o[0], o[1]) != (r[0], r[1]) for o in stats)
    ]
    inner.sort(key=lambda r: (-r[3], r[2]))
    return [(n, hm) for _, _, n, hm in inner]


def parse_ptxas(path):
    """{kernel: (registers, spill stores, spill loads, stack, smem)}"""
    out, cur, frame = {}, None, (0, 0, 0)
    with open(path) as f:
        for line in f:
            m = re.search(r"Compiling entry function '([^']+)'", line)
            if m:
                cur = m.group(1)
                continue
            m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
            if m and cur:
                frame = tuple(int(x) for x in m.groups())
                continue
            m = re.search(r"Used (\d+) registers", line)
            if m and cur:
                smem = re.search(r"(\d+) bytes smem", line)
                out[cur] = (int(m.group(1)), frame[1], frame[2], frame[0], int(smem.group(1)) if smem else 0)
                cur, frame = None, (0, 0, 0)
    return out


def describe(name):
    """(kernel family, head dim, stats) of a kernel name."""
    m = re.match(r"attn_prefill_fa2_(bf16|f16)_hd(\d+)(_stats)?$", name)
    if m:
        return f"fa2 {m.group(1)}", m.group(2), "stats" if m.group(3) else "plain"
    m = re.match(r"attn_prefill_(bf16|f16)_hd(\d+)$", name)
    if m:
        return f"reference {m.group(1)}", m.group(2), "runtime"
    return name, "-", "runtime"


def main():
    arch, ptxas_log, sass_files = sys.argv[1], sys.argv[2], sys.argv[3:]
    res = parse_ptxas(ptxas_log)
    rows = []
    for path in sass_files:
        funcs, labels = parse_sass(path)
        for name, instrs in funcs.items():
            cand = loops(instrs, labels[name])
            rows.append((name, cand))
    order = {"fa2": 0, "reference": 1}

    def key(r):
        fam, hd, st = describe(r[0])
        return (order.get(fam.split()[0], 2), fam, int(hd) if hd.isdigit() else 0, st, r[0])

    print(f"| kernel | arch | head_dim | stats | regs | spill st/ld (B) | stack (B) | smem static (B) "
          f"| main-loop instr | main-loop HMMA | instr/HMMA | other HMMA loops (instr/HMMA) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, cand in sorted(rows, key=key):
        fam, hd, st = describe(name)
        regs, ss, sl, stack, smem = res.get(name, (0, 0, 0, 0, 0))
        if cand:
            n, hm = cand[0]
            main_loop = f"{n} | {hm} | {n / hm:.2f}"
            others = ", ".join(f"{a}/{b} = {a / b:.2f}" for a, b in cand[1:]) or "-"
        else:
            main_loop, others = "- | 0 | n/a", "-"
        print(f"| {fam} `{name}` | {arch} | {hd} | {st} | {regs} | {ss}/{sl} | {stack} | {smem} "
              f"| {main_loop} | {others} |")


if __name__ == "__main__":
    main()
