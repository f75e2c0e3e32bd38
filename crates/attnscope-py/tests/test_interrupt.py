"""The GIL is released while the engine computes, and Ctrl-C interrupts a long call cleanly."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

from conftest import TINY

SCRIPT = textwrap.dedent(f"""
    import os, signal, threading, time
    import attnscope
    m = attnscope.load({str(TINY)!r}, device="cpu")
    threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    started = time.monotonic()
    try:
        m.run(["Once upon a time"] * 2000, generate=900, capture="none", ignore_eos=True)
        print("FINISHED")
    except KeyboardInterrupt:
        print(f"INTERRUPTED after {{time.monotonic() - started:.2f}} s")
    r = m.run("Once upon a time", capture="stats")
    print("USABLE", r.stats.num_rows > 0)
""")


def test_ctrl_c_interrupts_a_long_run_and_the_model_stays_usable():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    assert lines[0].startswith("INTERRUPTED"), done.stdout
    assert float(lines[0].split()[2]) < 5.0, done.stdout  # SIGINT at 1 s; stopped at the next step
    assert lines[1] == "USABLE True"


def test_the_gil_is_released_while_the_engine_computes(tiny):
    """A Python thread keeps running during one long prefill (no step at which the GIL is taken back):
    it ticks well inside the call, away from its first and last 10 ms, where a held GIL would allow
    at most one switch interval."""
    ids = [1] + [(7 * i) % 500 + 3 for i in range(900)]
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(time.perf_counter())

    tiny.run([ids], capture="all")  # warm up
    thread = threading.Thread(target=tick)
    thread.start()
    time.sleep(0.01)
    start = time.perf_counter()
    tiny.run([ids], capture="all")
    end = time.perf_counter()
    stop.set()
    thread.join()
    assert end - start > 0.05, "the call is too short to tell"
    inside = sum(1 for t in ticks if start + 0.01 < t < end - 0.01)
    assert inside > 100, f"the other thread ticked {inside} times inside a {end - start:.3f} s call"
