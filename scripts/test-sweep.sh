#!/usr/bin/env bash
# The sweep's end-to-end tests (tests/sweep): a job array on a real single-node Slurm cluster on this host
# (scripts/slurm-local.sh), shards as plain processes with one SIGKILLed and restarted, SIGUSR1 stop and
# resume; then `attnscope merge` read back with polars and duckdb.
#
# Usage: scripts/test-sweep.sh [pytest args...]
#   ATTNSCOPE_BIN            the CLI under test (default target/release/attnscope, built if missing)
#   ATTNSCOPE_REQUIRE_SLURM  1: installing or starting Slurm fails the script (CI); otherwise the Slurm
#                            test prints SKIP and the others run
#   ATTNSCOPE_SLURM_DIR      the cluster's private directory (default /tmp/attnscope-slurm)
# Needs root (Slurm's daemons, apt-get), python3 with venv.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if [ -z "${ATTNSCOPE_BIN:-}" ]; then
    ATTNSCOPE_BIN=$root/target/release/attnscope
    [ -x "$ATTNSCOPE_BIN" ] || cargo build --release --locked --bin attnscope
fi
ATTNSCOPE_BIN=$(realpath "$ATTNSCOPE_BIN")
export ATTNSCOPE_BIN
[ -x "$ATTNSCOPE_BIN" ] || { echo "test-sweep: $ATTNSCOPE_BIN is not executable" >&2; exit 1; }

venv=target/sweep-test-venv
rm -rf "$venv"
python3 -m venv "$venv" || { (apt-get install -y -qq python3-venv || (apt-get update -qq && apt-get install -y -qq python3-venv)) >&2 && python3 -m venv "$venv"; }
"$venv/bin/pip" install -q --disable-pip-version-check --only-binary=:all: -r tests/sweep/requirements.txt

export ATTNSCOPE_SLURM_DIR=${ATTNSCOPE_SLURM_DIR:-/tmp/attnscope-slurm}
slurm_started=0
cleanup() {
    if [ "$slurm_started" = 1 ]; then "$root"/scripts/slurm-local.sh stop || true; fi
}
trap cleanup EXIT

require=${ATTNSCOPE_REQUIRE_SLURM:-0}
if [ "$(id -u)" != 0 ]; then
    [ "$require" = 1 ] && { echo "test-sweep: ATTNSCOPE_REQUIRE_SLURM=1 but not root" >&2; exit 1; }
    echo "SKIP: Slurm tests: not root (slurm-local.sh runs the daemons as root)"
    export ATTNSCOPE_SLURM_SKIP="not root"
elif ! "$root"/scripts/slurm-local.sh install; then
    [ "$require" = 1 ] && { echo "test-sweep: installing Slurm failed" >&2; exit 1; }
    echo "SKIP: Slurm tests: installing slurmctld/slurmd/munge failed"
    export ATTNSCOPE_SLURM_SKIP="installing Slurm failed"
else
    # A cluster left over by an earlier run that was killed: stop it first (its directory is ours).
    "$root"/scripts/slurm-local.sh stop || true
    slurm_started=1
    if env_line=$("$root"/scripts/slurm-local.sh start); then
        eval "$env_line"
        echo "test-sweep: Slurm up ($(sinfo --version)), $env_line"
    else
        [ "$require" = 1 ] && { echo "test-sweep: starting Slurm failed" >&2; exit 1; }
        echo "SKIP: Slurm tests: the local cluster did not start"
        export ATTNSCOPE_SLURM_SKIP="the local cluster did not start"
    fi
fi
export ATTNSCOPE_REQUIRE_SLURM=$require

cd tests/sweep
"$root/$venv/bin/python" -m pytest -q -rs -p no:cacheprovider "$@"
