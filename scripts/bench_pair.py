#!/usr/bin/env python3
"""attnscope and HF transformers in one harness: paired, interleaved calls with the order alternated each
round, and the ratio of every round, so that ratios are honest on a shared, noisy machine.

Re-run the full table of BENCHMARKS.md ("CPU vs HF, paired"), from the repository root, inside the venv of
scripts/requirements-bench.txt, after `cargo build --release`:

    python scripts/bench_pair.py --threads 2 --json bench-pair.json > bench-pair.md

How it measures
  * Two long-lived processes per model, each loading its model once (random weights, f32, CPU, the same
    config): `attnscope bench-serve --model M --threads N` (with RAYON_NUM_THREADS=N) and
    scripts/bench_pair_hf.py (torch.set_num_threads(N)). Both speak a line protocol on stdin/stdout: one JSON
    request, one JSON reply holding the seconds of that single call (see `attnscope bench-serve --help`).
  * Every round measures each case once on each engine, back to back; the engine that goes first alternates
    each round (attnscope first in even rounds). `--pause` seconds of idle between calls let the other
    engine's spinning worker threads go to sleep. `--warmup` unrecorded rounds come first.
  * Per case and round the ratio is attnscope seconds / HF seconds (prefill; below 1: attnscope is faster)
    or attnscope tok/s / HF tok/s (decode; above 1: attnscope is faster). The table gives min / median /
    max of these per-round ratios and the median figure of each engine; stats ÷ none compares attnscope's
    stats and none calls of the same round.
  * Cases whose warm-up pair took less than --short-s seconds get --short-rounds rounds instead of
    --rounds (cheap cases, more noise).

Cases (ids for --cases; see --list-cases): llama-100m prefill none / stats ÷ HF sdpa and all weights ÷ HF
eager + output_attentions at T = 128, 512, 1024, 2048; llama-100m decode batch 1 context 512 and 64, batch 8
context 512 (tok/s); tinyllama-1.1b prefill none ÷ sdpa at T = 128, 512, 1024 (~4.4 GB of f32 weights per
engine, so ~9 GB for the pair). Models run one after the other; a model's two processes end before the
next model's start.

Output: the Markdown table (ready for BENCHMARKS.md) on stdout, progress on stderr, `--json FILE` with every
round's seconds. Exit status 0, or 1 with one line `error: …` (a bad flag, an engine that fails or dies),
2 for argparse usage errors, 130 on Ctrl-C; the engine processes are ended in every case.

`--self-test` checks the pure parts (statistics, order, case selection, table) and the driver against two
fake engines; it needs neither torch nor an attnscope build.
"""

import argparse
import datetime
import json
import os
import select
import shlex
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_pair_report as rep  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA = "attnscope-bench-pair/1"


class EngineError(Exception):
    """An engine failed a call, died, or broke the protocol."""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def _die_with_parent():
    """In the child: SIGTERM when the harness dies, even by SIGKILL (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class Engine:
    """One engine process speaking the line protocol; `call` sends a request and returns the reply."""

    def __init__(self, name, argv, env=None, timeout_s=1800.0, verbose=False):
        self.name, self.argv, self.timeout_s = name, argv, timeout_s
        self.stderr = None if verbose else tempfile.TemporaryFile(mode="w+")
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                         env=env, text=True, bufsize=1, start_new_session=True,
                                         preexec_fn=_die_with_parent)
        except OSError as e:
            raise EngineError(f"{name}: cannot start {argv[0]}: {e.strerror}") from None
        self.ready = self._read()
        if not self.ready.get("ready"):
            raise EngineError(f"{name}: expected a ready line, got {self.ready}")

    def _stderr_tail(self):
        if self.stderr is None:
            return ""
        self.stderr.seek(0)
        lines = [line.strip() for line in self.stderr.read().splitlines() if line.strip()]
        return f": {lines[-1]}" if lines else ""

    def _read(self):
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout_s)
        if not ready:
            raise EngineError(f"{self.name}: no reply within {self.timeout_s:.0f} s")
        line = self.proc.stdout.readline()
        if not line:
            rc = self.proc.wait(timeout=30)
            raise EngineError(f"{self.name} exited (status {rc}){self._stderr_tail()}")
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            raise EngineError(f"{self.name}: not a protocol line: {line.strip()[:200]!r}") from None

    def call(self, request):
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            rc = self.proc.wait(timeout=30)
            raise EngineError(f"{self.name} exited (status {rc}){self._stderr_tail()}") from None
        out = self._read()
        if not out.get("ok"):
            raise EngineError(f"{self.name}: {json.dumps(request)}: {out.get('error', out)}")
        return out

    def close(self, graceful=True):
        """Ends the process: `quit` when it is idle (graceful), else SIGTERM, then SIGKILL after 10 s."""
        if self.proc.poll() is None and graceful:
            try:
                self.proc.stdin.write('{"op":"quit"}\n')
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.stderr):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass


def engine_commands(args, model):
    """argv and environment of each engine for one model."""
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads),
               HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    attnscope = [args.attnscope_bin, "bench-serve", "--model", model, "--threads", str(args.threads),
                 "--seed", str(args.seed), "--device", "cpu"]
    hf = [args.python, os.path.join(REPO, "scripts", "bench_pair_hf.py"), "--model", model,
          "--threads", str(args.threads), "--seed", str(args.seed), "--decode-method", args.hf_decode]
    return dict(attnscope=attnscope, hf=hf), env


def run_model(cases, engines, args):
    """Warm-up and recorded rounds over the cases of one model, calls interleaved, order alternated."""
    for c in cases:
        c.rounds = args.rounds
    warm = {c.id: 0.0 for c in cases}
    total_rounds = args.warmup + max(args.rounds, args.short_rounds)
    for r in range(total_rounds):
        recorded = r - args.warmup
        if recorded == 0 and args.warmup > 0:
            for c in cases:
                c.rounds = max(args.short_rounds, args.rounds) if warm[c.id] < args.short_s else args.rounds
        order = rep.order_of_round(r)
        todo = [c for c in cases if recorded < 0 or recorded < c.rounds]
        if not todo:
            break
        what = "warm-up" if recorded < 0 else f"round {recorded + 1}/{max(c.rounds for c in cases)}"
        log(f"  {what}: {len(todo)} cases, {order[0]} first")
        for c in todo:
            sample = dict(round=recorded, first=order[0])
            for name in order:
                t0 = time.perf_counter()
                out = engines[name].call(c.requests[name])
                wall = time.perf_counter() - t0
                # Decode keeps seconds per step; Case.value turns either into the figure compared.
                sample[f"{name}_s"] = out["seconds_per_step"] if c.kind == "tok/s" else out["seconds"]
                if recorded < 0:
                    warm[c.id] += wall
                if args.pause > 0:
                    time.sleep(args.pause)
            if recorded >= 0:
                c.samples.append(sample)


def run_all(cases, args, make_engines):
    """Runs every model's cases with its own pair of engines; returns the ready lines per model."""
    readies = {}
    models = list(dict.fromkeys(c.model for c in cases))
    for model in models:
        mine = [c for c in cases if c.model == model]
        log(f"== {model}: {len(mine)} cases; starting both engines")
        engines = {}
        try:
            for name, argv, env in make_engines(model):
                engines[name] = Engine(name, argv, env, timeout_s=args.call_timeout, verbose=args.verbose)
            readies[model] = {n: e.ready for n, e in engines.items()}
            for n, e in engines.items():
                if e.ready.get("threads") != args.threads:
                    raise EngineError(f"{n} runs {e.ready.get('threads')} threads, not --threads {args.threads}")
            run_model(mine, engines, args)
            for e in engines.values():
                e.close()
        except BaseException:
            for e in engines.values():
                e.close(graceful=False)
            raise
    return readies


def git_rev():
    try:
        rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (rev + (" (uncommitted changes)" if dirty else "")) or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def header_lines(args, readies, mach, started, command):
    load_end = os.getloadavg()[0]
    flags = ", ".join(f"{f} {'yes' if v else 'no'}" for f, v in mach["flags"].items())
    a = next((r["attnscope"] for r in readies.values()), {})
    h = next((r["hf"] for r in readies.values()), {})
    decode = ("S single-token forwards with the DynamicCache, prompt prefilled untimed" if args.hf_decode == "loop"
              else "(t(generate S+1) - t(generate 1))")
    return [
        f"Measured {started} with `{command}`.",
        "",
        f"- CPU: {mach['model']}, {mach['logical_cpus']} logical CPUs ({mach['usable_cores']} usable), "
        f"{flags}; {mach['memory_gib']} GiB.",
        f"- attnscope {a.get('version', '?')} at {git_rev()} ({args.attnscope_bin}), `bench-serve`, "
        f"{a.get('compute_dtype', '?')}, {a.get('threads', '?')} threads (`--threads`, RAYON_NUM_THREADS).",
        f"- HF: transformers {h.get('transformers', '?')}, torch {h.get('torch', '?')}, "
        f"{h.get('compute_dtype', '?')}, torch.set_num_threads({h.get('threads', '?')}); prefill "
        "`model(ids, use_cache=False, logits_to_keep=1[, output_attentions=True])`; decode: "
        f"{decode}, greedy.",
        f"- Same config, random weights (seed {args.seed}), batch 1 prefill; decode {args.decode_steps} timed steps. "
        f"Calls interleaved, order alternated each round, {args.pause} s pause between calls, {args.warmup} "
        f"warm-up round(s), {args.rounds} rounds ({args.short_rounds} for cases under {args.short_s} s a pair).",
        f"- Load average (1 min) at the start / end of the run: {args.load_start:.2f} / {load_end:.2f}"
        + (f". **Warning: above the {mach['usable_cores']} usable cores, so other work shared the CPU; the "
           "ratios are not those of a quiet machine.**" if max(args.load_start, load_end) > mach["usable_cores"]
           else "."),
        "- ratio = attnscope ÷ HF of the same round: of times for prefill (< 1: attnscope faster), of tok/s for "
        "decode (> 1: attnscope faster). \"met\" judges the median ratio.",
    ]


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Paired benchmark: attnscope and HF transformers, calls interleaved, order alternated each "
                    "round; prints per-round ratio min/median/max as a Markdown table.",
        epilog="Full run (BENCHMARKS.md): python scripts/bench_pair.py --threads 2 --json bench-pair.json. "
               "Only the 100m prefill without capture: --cases llama-100m/prefill-none. The method is in "
               "the docstring at the top of scripts/bench_pair.py.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--cases", default="", help="comma list of case-id patterns (substring, or fnmatch glob with "
                                               "* ? [); default: all cases")
    p.add_argument("--list-cases", action="store_true", help="print the case ids and exit")
    p.add_argument("--rounds", type=int, default=7, help="recorded rounds per case")
    p.add_argument("--short-rounds", type=int, default=15, help="recorded rounds of the short cases")
    p.add_argument("--short-s", type=float, default=1.5,
                   help="a case is short when its warm-up pair (both engines) took less than this many seconds")
    p.add_argument("--warmup", type=int, default=1, help="unrecorded rounds before the recorded ones")
    p.add_argument("--threads", type=int, default=2, help="threads of both engines")
    p.add_argument("--decode-steps", type=int, default=16, help="timed decode steps per decode call")
    p.add_argument("--pause", type=float, default=0.1, help="idle seconds after each call")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and prompts (each engine its own RNG)")
    p.add_argument("--attnscope-bin", default=os.path.join(REPO, "target", "release", "attnscope"),
                   help="the attnscope binary (a release build)")
    p.add_argument("--python", default=sys.executable, help="python of the HF engine (with torch)")
    p.add_argument("--hf-decode", choices=["loop", "generate"], default="loop",
                   help="HF decode timing: loop = timed cached forwards; generate = bench_hf.py's subtraction")
    p.add_argument("--call-timeout", type=float, default=1800.0, help="seconds to wait for one reply")
    p.add_argument("--json", default=None, help="also write every round and the summaries here")
    p.add_argument("--verbose", action="store_true", help="pass the engines' stderr through")
    p.add_argument("--self-test", action="store_true", help="test the harness itself (no torch) and exit")
    args = p.parse_args(argv)
    for flag in ("rounds", "short_rounds", "threads", "decode_steps"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or args.pause < 0 or args.call_timeout <= 0:
        p.error("--warmup and --pause must be >= 0, --call-timeout > 0")
    return args


def _interrupt(signum, frame):
    """SIGTERM ends the run like Ctrl-C: the engines are stopped on the way out."""
    raise KeyboardInterrupt


def write_json(path, doc):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".bench_pair.", suffix=".json", dir=d)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


def main(argv=None):
    args = parse_args(argv)
    if args.self_test:
        import bench_pair_selftest
        return bench_pair_selftest.run()
    try:
        cases = rep.select_cases(rep.default_cases(args.decode_steps),
                                 [x.strip() for x in args.cases.split(",") if x.strip()])
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.list_cases:
        for c in cases:
            print(f"{c.id:<36} {c.label}")
        return 0
    if not os.access(args.attnscope_bin, os.X_OK):
        print(f"error: --attnscope-bin {args.attnscope_bin}: not an executable (run `cargo build --release`)",
              file=sys.stderr)
        return 1
    if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        print(f"error: --json {args.json}: its directory does not exist", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # also where a background start left SIGINT ignored
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = "python scripts/bench_pair.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))

    def make_engines(model):
        cmds, env = engine_commands(args, model)
        return [(n, cmds[n], env) for n in rep.ENGINES]

    t0 = time.time()
    args.load_start = os.getloadavg()[0]
    try:
        readies = run_all(cases, args, make_engines)
    except EngineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; engines stopped", file=sys.stderr)
        return 130
    mach = rep.machine()
    table = rep.markdown(cases, header_lines(args, readies, mach, started, command))
    print(table, end="")
    log(f"done in {time.time() - t0:.0f} s")
    if args.json:
        write_json(args.json, dict(
            schema=SCHEMA, created_utc=started, command=command, machine=mach, engines=readies,
            attnscope_git=git_rev(), settings={k: v for k, v in vars(args).items() if k not in ("self_test",)},
            cases=[dict(id=c.id, label=c.label, kind=c.kind, requests=c.requests, target=c.target,
                        samples=c.samples, summary=rep.case_summary(c) if c.samples else None) for c in cases],
            stats_vs_none=[dict(label=lab, ratio=r, stats_ms=s, none_ms=n) for lab, r, s, n in
                           rep.stats_vs_none(cases)],
            markdown=table))
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
