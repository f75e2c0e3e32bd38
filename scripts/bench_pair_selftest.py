#!/usr/bin/env python3
"""`python3 scripts/bench_pair.py --self-test`: checks of the paired harness that need neither torch nor an
attnscope build (standard library only; run by .ci/run).

It checks the ratio statistics, the order alternation, case selection, the CPU description, the table, and
the driver end to end against two fake engines (this file run as `--fake NAME`, speaking the line protocol
with made-up seconds): order and ratios recorded, a failing engine reported with its error, and no engine
process left behind.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_pair as pair  # noqa: E402
import bench_pair_report as rep  # noqa: E402

HERE = os.path.abspath(__file__)


def fake_engine(name, fail_on):
    """A protocol server: prefill seconds = t × 1e-4 (attnscope) or × 2e-4 (hf); decode 10 / 20 ms a step.
    A request whose op equals `fail_on` gets ok:false; "die" exits at the first request."""
    scale = 1.0 if name == "attnscope" else 2.0
    print(json.dumps(dict(ready=True, engine=name, threads=2, version="0", torch="0", transformers="0",
                          compute_dtype="f32")), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "quit":
            print(json.dumps(dict(ok=True)), flush=True)
            return
        if fail_on == "die":
            print("fake engine: dying", file=sys.stderr)
            sys.exit(3)
        if req["op"] == fail_on:
            out = dict(ok=False, error="made-up failure")
        elif req["op"] == "prefill":
            out = dict(ok=True, seconds=req["t"] * 1e-4 * scale)
        else:
            per = 0.01 * scale
            out = dict(ok=True, seconds=per * req["steps"], steps=req["steps"], seconds_per_step=per)
        print(json.dumps(out), flush=True)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def test_pure_parts():
    s = rep.summary([3.0, 1.0, 2.0, 10.0])
    check(s == dict(min=1.0, median=2.5, max=10.0, n=4), f"summary {s}")
    check([rep.order_of_round(r)[0] for r in range(4)] == ["attnscope", "hf", "attnscope", "hf"], "order")
    check(all(sorted(rep.order_of_round(r)) == sorted(rep.ENGINES) for r in range(3)), "both engines each round")
    cases = rep.default_cases(16)
    check(len(cases) == 12 + 3 + 3 and len({c.id for c in cases}) == len(cases), "18 distinct cases")
    check([c.id for c in rep.select_cases(cases, ["decode"])] ==
          ["llama-100m/decode/b1-ctx512", "llama-100m/decode/b1-ctx64", "llama-100m/decode/b8-ctx512"], "decode")
    check(len(rep.select_cases(cases, ["*/prefill-none/T1024"])) == 2, "glob")
    try:
        rep.select_cases(cases, ["nosuch"])
        check(False, "unknown pattern accepted")
    except ValueError as e:
        check("nosuch" in str(e), str(e))
    dec = next(c for c in cases if c.kind == "tok/s" and c.batch == 8)
    check(abs(rep.ratio_of(dec, dict(attnscope_s=0.1, hf_s=0.2)) - 2.0) < 1e-12, "tok/s ratio")
    check(rep.target_met("≤ 1.0", 1.0) == "yes" and rep.target_met("≥ 1.2", 1.1) == "no", "targets")
    cpu = rep.cpu_description("processor : 0\nmodel name : X\nflags : fpu avx2 fma\nprocessor : 1\n", 2)
    check(cpu["model"] == "X" and cpu["logical_cpus"] == 2, str(cpu))
    check(cpu["flags"] == dict(avx512f=False, avx2=True, fma=True), str(cpu["flags"]))


def fake_args(**over):
    args = pair.parse_args(["--rounds", "3", "--short-rounds", "5", "--warmup", "1", "--pause", "0",
                            "--call-timeout", "30"])
    for k, v in over.items():
        setattr(args, k, v)
    return args


def fake_maker(fail=None):
    def make(model):
        return [(n, [sys.executable, HERE, "--fake", n, (fail or {}).get(n, "")], None) for n in rep.ENGINES]
    return make


def test_driver_end_to_end():
    cases = rep.select_cases(rep.default_cases(4), ["llama-100m/prefill-none/T128", "llama-100m/prefill-stats/T128",
                                                    "b8-ctx512"])
    args = fake_args(short_s=1e9)  # every case is short: --short-rounds
    readies = pair.run_all(cases, args, fake_maker())
    check(set(readies["llama-100m"]) == set(rep.ENGINES), str(readies))
    for c in cases:
        check([s["round"] for s in c.samples] == [0, 1, 2, 3, 4], f"{c.id} rounds {c.samples}")
        check([s["first"] for s in c.samples] == ["hf", "attnscope", "hf", "attnscope", "hf"], "alternated")
    none, stats, dec = cases
    check(abs(rep.case_summary(none)["ratio"]["median"] - 0.5) < 1e-9, "time ratio 0.5")
    check(abs(rep.case_summary(dec)["ratio"]["median"] - 2.0) < 1e-9, "tok/s ratio 2")
    check(abs(rep.case_summary(dec)["attnscope"] - 800.0) < 1e-6, "batch 8 / 10 ms = 800 tok/s")
    (label, r, _, _), = rep.stats_vs_none(cases)
    check(r["median"] == 1.0 and "T=128" in label, label)
    table = rep.markdown(cases, ["header"])
    check(table.count("\n| llama-100m") == 4 and "**0.50**" in table and "**2.00**" in table, table)

    cases = rep.select_cases(rep.default_cases(4), ["llama-100m/prefill-none/T128"])
    pair.run_all(cases, fake_args(short_s=0.0), fake_maker())
    check(len(cases[0].samples) == 3, "a long case gets --rounds")


def test_failures_are_reported():
    for fail, expect in (({"hf": "prefill"}, "hf: "), ({"attnscope": "die"}, "attnscope exited (status 3)")):
        cases = rep.select_cases(rep.default_cases(4), ["llama-100m/prefill-none/T128"])
        started = []

        def make(model, fail=fail):
            out = fake_maker(fail)(model)
            started.extend(out)
            return out
        try:
            pair.run_all(cases, fake_args(), make)
            check(False, f"{fail}: no error")
        except pair.EngineError as e:
            check(expect in str(e), f"{fail}: {e}")
            if "die" in fail.values():
                check("dying" in str(e), f"stderr tail in {e}")
    # Every fake engine this test started is gone (run_all closes them on the way out).
    left = fake_engines_running()
    check(not left, f"engines left running: {left}")


def fake_engines_running():
    """Pids of processes running this file as a fake engine (from /proc)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if len(argv) > 2 and argv[1] == HERE.encode() and argv[2] == b"--fake":
            pids.append(int(pid))
    return pids


def run():
    pair.log = lambda msg: None  # the driver's progress lines would only clutter the CI log
    for test in (test_pure_parts, test_driver_end_to_end, test_failures_are_reported):
        test()
        print(f"ok   {test.__name__}")
    print("bench_pair self-test: all passed")
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--fake":
        fake_engine(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "")
    else:
        sys.exit(run())
