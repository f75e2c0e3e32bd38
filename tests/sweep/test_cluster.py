"""End-to-end tests of `attnscope sweep` / `sweep status` / `merge`, run by scripts/test-sweep.sh.

1. a job array on a real Slurm cluster (scripts/slurm-local.sh): one array task scancelled after it
   committed a unit, the others run to the end, that task resubmitted alone;
2. without Slurm: four `--shard i/4` processes, one SIGKILLed after it committed a unit and restarted;
3. SIGUSR1 to a running shard: exit 75 after its batch, no temporary dirs, a rerun completes.

Each ends with the same checks: `sweep status --json` done == plan count, every planned unit committed
exactly once, nothing with `.tmp-` under the sweep dir, `attnscope merge` read back by polars and duckdb
(hive partitions), merged tokens rows == the sum of the units' tokens.parquet rows, units table all done.

Environment: ATTNSCOPE_BIN (the CLI), SLURM_CONF (a running cluster; absent: test 1 skips unless
ATTNSCOPE_REQUIRE_SLURM=1), ATTNSCOPE_SLURM_SKIP (why test-sweep.sh has no cluster),
ATTNSCOPE_SWEEP_MAX_NEW_TOKENS (the workload: tokens generated per unit, default 48).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("ATTNSCOPE_BIN", str(REPO / "target" / "release" / "attnscope"))
SHARED_MODEL = REPO.parent / "shared" / "models" / "stories260K"
N_PROMPTS = 40
MAX_NEW_TOKENS = int(os.environ.get("ATTNSCOPE_SWEEP_MAX_NEW_TOKENS", "48"))
EXIT_STOPPED = 75

WORDS = ("cat", "dog", "girl", "boy", "tree", "ball", "sun", "boat", "bird", "cake")


def log(msg):
    print(f"[test_cluster] {msg}", file=sys.stderr, flush=True)


def run(args, check=True, timeout=600, **kw):
    p = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"attnscope {' '.join(args)} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def write_spec(d: Path) -> Path:
    """A spec of N_PROMPTS prompts x 2 variants over stories260K (or the built-in default model)."""
    lines = [f"The {WORDS[i % len(WORDS)]} number {i} went to the {WORDS[(i * 7 + 3) % len(WORDS)]}" for i in range(N_PROMPTS)]
    (d / "prompts.txt").write_text("\n".join(lines) + "\n")
    model = f'path = "{SHARED_MODEL}"\n' if SHARED_MODEL.is_dir() else ""
    spec = d / "spec.toml"
    spec.write_text(
        f"""seed = 0
# Small batches (about two units each), so that a shard commits units one batch at a time and can be
# caught, killed or signalled between them.
max_batch_tokens = 128
[[models]]
name = "stories"
{model}
[[prompts]]
name = "tiny"
path = "prompts.txt"

[[variants]]
name = "plain"
template = "{{prompt}}"

[[variants]]
name = "prefixed"
template = "Once upon a time, {{prompt}}"

[capture]
kinds = "stats"

[generation]
max_new_tokens = {MAX_NEW_TOKENS}
"""
    )
    return spec


def plan(spec: Path):
    args = ["sweep", "--plan", str(spec), "--json"]
    doc = json.loads(run(args).stdout)
    ids = [u["id"] for u in doc["units"]]
    assert doc["count"] == len(ids), doc
    assert len(set(ids)) == len(ids), "duplicate unit ids in the plan"
    return doc


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    d = tmp_path_factory.mktemp("spec")
    s = write_spec(d)
    doc = plan(s)
    log(f"model {'stories260K' if SHARED_MODEL.is_dir() else 'default'}; plan {doc['count']} units")
    assert doc["count"] == 2 * N_PROMPTS, doc
    for u in doc["units"]:
        for k in ("id", "model", "prompts", "variant", "index"):
            assert k in u, u
    return s


def shard_ids(spec: Path, i: int, n: int):
    """Shard i of n runs the plan positions = i mod n (attnscope's sweep::plan::Shard)."""
    return {u["id"] for k, u in enumerate(plan(spec)["units"]) if k % n == i}


def committed(out: Path):
    """Committed unit ids: DIR/units/<id>/ (hidden temporary siblings excluded)."""
    d = out / "units"
    if not d.is_dir():
        return set()
    return {p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith(".") and ".tmp-" not in p.name}


def temporaries(out: Path):
    found = []
    for root, dirs, files in os.walk(out):
        found += [os.path.join(root, n) for n in dirs + files if ".tmp-" in n]
    return found


def wait_for(cond, timeout, what, poll=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def status(out: Path):
    return json.loads(run(["sweep", "status", str(out), "--json"]).stdout)


def check_complete(spec: Path, out: Path):
    doc = plan(spec)
    ids = [u["id"] for u in doc["units"]]
    n = doc["count"]

    st = status(out)
    assert st["total"] == n and st["done"] == n and st["failed"] == 0 and st["pending"] == 0, st
    assert not (out / "failed").exists() or not any((out / "failed").iterdir()), list((out / "failed").iterdir())

    units_dir = out / "units"
    entries = [p.name for p in units_dir.iterdir()]
    assert sorted(entries) == sorted(ids), f"units/ holds {sorted(set(entries) ^ set(ids))} beyond / short of the plan"
    for uid in ids:
        u = units_dir / uid
        assert (u / "tokens.parquet").is_file() and (u / "manifest.json").is_file() and (u / "unit.json").is_file(), uid
    tmps = temporaries(out)
    assert not tmps, f"temporary paths left: {tmps[:10]}"

    run(["merge", str(out)])
    merged = out / "merged"
    assert (merged / "manifest.json").is_file()
    json.loads((merged / "manifest.json").read_text())

    # stats: polars and duckdb read the hive-partitioned tree alike.
    stats_glob = f"{merged}/stats/**/*.parquet"
    lf = pl.scan_parquet(stats_glob, hive_partitioning=True)
    cols = lf.collect_schema().names()
    for k in ("model", "prompts", "variant"):
        assert k in cols, cols
    n_stats = lf.select(pl.len()).collect().item()
    assert n_stats > 0
    con = duckdb.connect()
    d_stats = con.execute(f"select count(*) from read_parquet('{stats_glob}', hive_partitioning=true)").fetchone()[0]
    assert d_stats == n_stats, (d_stats, n_stats)
    variants = {r[0] for r in con.execute(f"select distinct variant from read_parquet('{stats_glob}', hive_partitioning=true)").fetchall()}
    assert variants == {"plain", "prefixed"}, variants
    unit_stats = sum(pq.read_metadata(units_dir / uid / "stats.parquet").num_rows for uid in ids)
    assert n_stats == unit_stats, (n_stats, unit_stats)

    # tokens: every unit's rows exactly once.
    tokens_glob = f"{merged}/tokens/**/*.parquet"
    unit_tokens = sum(pq.read_metadata(units_dir / uid / "tokens.parquet").num_rows for uid in ids)
    tok = pl.scan_parquet(tokens_glob, hive_partitioning=True)
    n_tokens = tok.select(pl.len()).collect().item()
    assert n_tokens == unit_tokens, (n_tokens, unit_tokens)
    assert tok.select(pl.col("unit_id").n_unique()).collect().item() == n
    d_tokens = con.execute(
        f"select count(*), count(distinct unit_id) from read_parquet('{tokens_glob}', hive_partitioning=true)"
    ).fetchone()
    assert d_tokens == (n_tokens, n), d_tokens

    # the units table: one row per planned unit, all done.
    units = pl.read_parquet(merged / "units" / "units.parquet")
    for k in ("unit_id", "model", "prompts", "variant", "index", "status"):
        assert k in units.columns, units.columns
    assert units.height == n
    assert sorted(units["unit_id"].to_list()) == sorted(ids)
    assert set(units["status"].to_list()) == {"done"}, units["status"].value_counts()
    log(f"complete: {n} units, {n_tokens} token rows, {n_stats} stats rows")


# ---------------------------------------------------------------------------------------------- Slurm


def slurm_or_skip():
    why = os.environ.get("ATTNSCOPE_SLURM_SKIP")
    if not why and not os.environ.get("SLURM_CONF"):
        why = "SLURM_CONF is not set (no cluster started by scripts/slurm-local.sh)"
    if not why and shutil.which("sbatch") is None:
        why = "sbatch not found"
    if not why:
        p = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
        if p.returncode != 0 or not p.stdout.strip():
            why = f"sinfo failed: {p.stderr.strip()}"
    if why:
        if os.environ.get("ATTNSCOPE_REQUIRE_SLURM") == "1":
            pytest.fail(f"ATTNSCOPE_REQUIRE_SLURM=1 but no Slurm: {why}")
        print(f"SKIP: Slurm array test: {why}", flush=True)
        pytest.skip(why)


def squeue(job):
    """{array_task_id: state} of the array's tasks still known to squeue (pending, running, completing)."""
    p = subprocess.run(["squeue", "-h", "-j", str(job), "-r", "-o", "%K %T"], capture_output=True, text=True)
    if p.returncode != 0:  # an unknown job id once everything has been purged
        return {}
    out = {}
    for line in p.stdout.split("\n"):
        if line.strip():
            k, st = line.split()
            out[k] = st
    return out


def slurm_logs(out: Path):
    texts = []
    for f in sorted(out.glob("logs/*")) + sorted(out.glob("*.out")) + sorted(out.glob("slurm*")):
        if f.is_file():
            texts.append(f"----- {f.name}\n{f.read_text(errors='replace')[-3000:]}")
    return "\n".join(texts)


def test_slurm_array_scancel_and_resubmit(spec, tmp_path):
    slurm_or_skip()
    out = tmp_path / "sweep"
    n_tasks = 4
    run(["sweep", str(spec), "--out", str(out), "--emit-slurm", "--array-tasks", str(n_tasks),
         "--time", "00:20:00", "--cpus-per-task", "1", "--partition", "debug"])
    script = out / "sweep.sbatch"
    text = script.read_text()
    assert "#SBATCH" in text and "--array" in text and "--requeue" in text and "--signal=B:USR1@" in text, text
    shards = {k: shard_ids(spec, k, n_tasks) for k in range(n_tasks)}
    assert set().union(*shards.values()) == {u["id"] for u in plan(spec)["units"]}

    sub = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, cwd=out)
    assert sub.returncode == 0, sub.stderr
    job = sub.stdout.strip().split(";")[0]
    log(f"submitted array job {job}")

    # The first task that is running with >= 1 committed unit of its shard and units still to do.
    def victim():
        states = squeue(job)
        done = committed(out)
        for k, st in states.items():
            if st == "RUNNING" and k.isdigit():
                mine = shards[int(k)]
                if 0 < len(mine & done) < len(mine):
                    return int(k)
        return None

    try:
        k = wait_for(victim, 300, "an array task running with a committed unit")
    except AssertionError:
        subprocess.run(["scancel", job])
        raise AssertionError(f"no array task caught mid-shard (workload too small? raise ATTNSCOPE_SWEEP_MAX_NEW_TOKENS)\n{slurm_logs(out)}")
    subprocess.run(["scancel", f"{job}_{k}"], check=True)
    log(f"scancelled {job}_{k} with {len(shards[k] & committed(out))}/{len(shards[k])} of its units committed")

    # The cancelled task must stay cancelled: its SIGTERM makes attnscope exit 75 too, and a script that
    # requeues on 75 alone would bring it back (Slurm 22.05 accepts `scontrol requeue` from a task that
    # is being cancelled; it returns as PENDING, reason BeginTime).
    wait_for(lambda: str(k) not in squeue(job) or squeue(job).get(str(k)) == "PENDING", 120,
             f"task {k} to end after scancel", poll=0.5)
    assert str(k) not in squeue(job), (
        f"task {job}_{k} was requeued after scancel (state {squeue(job).get(str(k))}): the sbatch script must "
        f"requeue only after the time-limit warning (SIGUSR1), not after scancel's SIGTERM\n{slurm_logs(out)}")
    wait_for(lambda: not squeue(job), 600, "all array tasks to end", poll=1)
    done = committed(out)
    assert shards[k] - done, "the cancelled task's shard is complete: the cancel came too late to test anything"
    for j in range(n_tasks):
        if j != k:
            assert shards[j] <= done, f"shard {j} incomplete: {sorted(shards[j] - done)[:5]}\n{slurm_logs(out)}"

    sub = subprocess.run(["sbatch", "--parsable", f"--array={k}", str(script)], capture_output=True, text=True, cwd=out)
    assert sub.returncode == 0, sub.stderr
    job2 = sub.stdout.strip().split(";")[0]
    log(f"resubmitted task {k} as job {job2}")
    wait_for(lambda: not squeue(job2), 600, f"the resubmitted task {job2}", poll=1)
    try:
        check_complete(spec, out)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{slurm_logs(out)}") from None


# ------------------------------------------------------------------------------------ plain processes


def start_shard(spec: Path, out: Path, shard: str, logdir: Path, extra=()):
    name = shard.replace("/", "of")
    f = open(logdir / f"shard-{name}-{time.monotonic_ns()}.log", "w")
    p = subprocess.Popen([BIN, "sweep", str(spec), "--out", str(out), "--shard", shard, "--threads", "1", *extra],
                         stdout=f, stderr=subprocess.STDOUT, env={k: v for k, v in os.environ.items() if not k.startswith("SLURM_")})
    p.logfile = f
    return p


def logs_of(logdir: Path):
    return "\n".join(f"----- {f.name}\n{f.read_text(errors='replace')[-3000:]}" for f in sorted(logdir.glob("*.log")))


def test_shards_with_one_sigkilled_and_restarted(spec, tmp_path):
    out = tmp_path / "sweep"
    logdir = tmp_path / "logs"
    logdir.mkdir()
    n = 4
    shards = {i: shard_ids(spec, i, n) for i in range(n)}
    procs = {i: start_shard(spec, out, f"{i}/{n}", logdir) for i in range(n)}
    victim = 1
    try:
        wait_for(lambda: len(shards[victim] & committed(out)) >= 1 or procs[victim].poll() is not None, 300,
                 f"shard {victim} to commit a unit", poll=0.02)
        assert procs[victim].poll() is None, f"shard {victim} finished before it could be killed (workload too small)\n{logs_of(logdir)}"
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait()
        done = committed(out)
        log(f"SIGKILLed shard {victim} with {len(shards[victim] & done)}/{len(shards[victim])} of its units committed")
        for i, p in procs.items():
            if i != victim:
                assert p.wait(timeout=600) == 0, f"shard {i} exited {p.returncode}\n{logs_of(logdir)}"
        assert shards[victim] - committed(out), "shard was complete when killed: nothing tested"
        again = start_shard(spec, out, f"{victim}/{n}", logdir)
        assert again.wait(timeout=600) == 0, f"restarted shard exited {again.returncode}\n{logs_of(logdir)}"
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    try:
        check_complete(spec, out)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{logs_of(logdir)}") from None


def test_sigusr1_stops_after_batch_and_rerun_completes(spec, tmp_path):
    out = tmp_path / "sweep"
    logdir = tmp_path / "logs"
    logdir.mkdir()
    p = start_shard(spec, out, "0/1", logdir)
    try:
        wait_for(lambda: committed(out) or p.poll() is not None, 300, "a committed unit", poll=0.02)
        assert p.poll() is None, f"the sweep finished before SIGUSR1 (workload too small)\n{logs_of(logdir)}"
        p.send_signal(signal.SIGUSR1)
        rc = p.wait(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert rc == EXIT_STOPPED, f"exit {rc} after SIGUSR1, wanted {EXIT_STOPPED}\n{logs_of(logdir)}"
    assert not temporaries(out), temporaries(out)
    n = plan(spec)["count"]
    done = committed(out)
    assert 0 < len(done) < n, (len(done), n)
    st = status(out)
    assert st["done"] == len(done) and st["pending"] == n - len(done) and st["failed"] == 0, st
    log(f"SIGUSR1: exit 75 with {len(done)}/{n} units committed")

    p = start_shard(spec, out, "0/1", logdir)
    assert p.wait(timeout=600) == 0, logs_of(logdir)
    check_complete(spec, out)
