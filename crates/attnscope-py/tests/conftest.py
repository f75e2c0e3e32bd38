"""Shared fixtures of the Python module's tests: the repository's models, ../shared, the CLI binary."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "tests" / "fixtures"
TINY = REPO / "models" / "tiny-random-llama"
SHARED = Path(os.environ.get("ATTNSCOPE_SHARED", REPO.parent / "shared"))
STORIES = SHARED / "models" / "stories260K"
GOLDEN_FIXTURES = sorted(p.name for p in FIXTURES.iterdir() if (p / "golden.json").exists())


def require_stories() -> Path:
    """../shared's stories260K, or a visible skip."""
    if not (STORIES / "config.json").exists():
        print(f"SKIP: {STORIES} is absent (../shared not beside the repository)")
        pytest.skip(f"SKIP: {STORIES} is absent")
    return STORIES


@pytest.fixture(scope="session")
def cli() -> Path:
    """The release `attnscope` binary: ATTNSCOPE_BIN, or target/release/attnscope (built by `.ci/run`)."""
    path = Path(os.environ.get("ATTNSCOPE_BIN", REPO / "target" / "release" / "attnscope"))
    if not path.exists():
        pytest.fail(f"{path} is missing: run `cargo build --release --locked --bin attnscope` first "
                    f"(or set ATTNSCOPE_BIN)")
    return path


def run_cli(cli: Path, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([str(cli), *args], capture_output=True, text=True)
    assert done.returncode == 0, f"attnscope {' '.join(args)} failed:\n{done.stderr}"
    return done


@pytest.fixture(scope="session")
def tiny():
    import attnscope
    return attnscope.load(TINY, device="cpu")


@pytest.fixture(scope="session")
def gqa():
    import attnscope
    return attnscope.load(FIXTURES / "llama_gqa", device="cpu")
