#!/usr/bin/env bash
# The Python module's checks: builds the abi3 wheel of crates/attnscope-py with maturin in a fresh venv,
# installs it and runs its pytest suite against the release CLI (the equivalence tests compare with it).
# Usage: scripts/test-python.sh [pytest args...]   (from anywhere; needs python3 >= 3.9 with venv, cargo)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/py-test-venv
rm -rf "$venv" target/wheels
python3 -m venv "$venv" || { (apt-get install -y -qq python3-venv || (apt-get update -qq && apt-get install -y -qq python3-venv)) >&2 && python3 -m venv "$venv"; }
"$venv/bin/pip" install -q --disable-pip-version-check -r crates/attnscope-py/requirements-test.txt
"$venv/bin/maturin" build --release --locked -m crates/attnscope-py/Cargo.toml -o target/wheels
wheel=$(ls target/wheels/attnscope-*-abi3-*.whl)
echo "built $wheel"
"$venv/bin/pip" install -q --disable-pip-version-check "$wheel"
cargo build --release --locked --bin attnscope
export ATTNSCOPE_BIN="$PWD/target/release/attnscope"
# Run from the tests directory so that `import attnscope` is the installed wheel, not the sources.
cd crates/attnscope-py/tests
"../../../$venv/bin/python" -m pytest -q -rs "$@"
