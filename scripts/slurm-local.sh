#!/usr/bin/env bash
# A real single-node Slurm cluster on this host, for tests (CI runs it as root in a container without
# systemd; cgroups may be v1, hybrid, absent or read-only, so none of Slurm's cgroup plugins is used).
#
#   scripts/slurm-local.sh install   apt-get install slurmctld, slurmd, slurm-client, munge (idempotent)
#   eval "$(scripts/slurm-local.sh start)"
#                                    writes the confs to $ATTNSCOPE_SLURM_DIR (default /tmp/attnscope-slurm),
#                                    starts a private munged, slurmctld and slurmd, waits until the node
#                                    is idle, and prints `export SLURM_CONF=...` (the only line on stdout)
#   scripts/slurm-local.sh stop      scancel everything, stop the daemons, remove the directory
#   scripts/slurm-local.sh env       prints the export line again (for a running cluster)
#
# Everything lives in the private directory: confs, state, spool, logs, pid files, and a munged of its
# own (its own key and socket, named by AuthInfo), so a system munged or /etc/slurm is left alone.
# Ports: $ATTNSCOPE_SLURMCTLD_PORT and that + 1 for slurmd (default: the first free pair from 6817 up).
# Needs root: SlurmUser=root, and slurmd runs jobs as their submitting user.
set -euo pipefail

DIR=${ATTNSCOPE_SLURM_DIR:-/tmp/attnscope-slurm}
CONF=$DIR/slurm.conf
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# The ports: $ATTNSCOPE_SLURMCTLD_PORT and that + 1, else the port pair already in our conf (a running
# cluster), else the first free pair from 6817 up (another cluster on this host, e.g. a second checkout's
# tests, holds 6817/6818).
if [ -n "${ATTNSCOPE_SLURMCTLD_PORT:-}" ]; then
    CTLD_PORT=$ATTNSCOPE_SLURMCTLD_PORT
elif [ -f "$CONF" ] && grep -q '^SlurmctldPort=' "$CONF"; then
    CTLD_PORT=$(sed -n 's/^SlurmctldPort=//p' "$CONF")
else
    CTLD_PORT=6817
    if [ "${1:-}" = start ]; then
        while port_busy "$CTLD_PORT" || port_busy $((CTLD_PORT + 1)); do
            CTLD_PORT=$((CTLD_PORT + 2))
            [ "$CTLD_PORT" -lt 6917 ] || { echo "slurm-local: no free port pair in 6817-6917" >&2; exit 1; }
        done
    fi
fi
SLURMD_PORT=$((CTLD_PORT + 1))
MUNGE_SOCKET=$DIR/munge/munge.socket.2

log() { echo "slurm-local: $*" >&2; }

install() {
    local pkgs=(slurmctld slurmd slurm-client munge)
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null; then
        return 0
    fi
    local out
    out=$(mktemp)
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >"$out" 2>&1; then
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}"; } >"$out" 2>&1; then
            cat "$out" >&2
            rm -f "$out"
            log "apt-get install ${pkgs[*]} failed"
            return 1
        fi
    fi
    rm -f "$out"
}

print_env() {
    echo "export SLURM_CONF=$CONF"
}

log_tails() {
    local f
    for f in "$DIR"/log/*.log; do
        [ -f "$f" ] || continue
        echo "----- $f (last 40 lines)" >&2
        tail -n 40 "$f" >&2
    done
}

fail() {
    log "$*"
    log_tails
    exit 1
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

write_conf() {
    local host cpus mem_kb mem_mb
    host=$(hostname -s)
    cpus=$(nproc)
    mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
    # Leave a margin (10 %, at least 512 MiB) so that slurmd's own count, which can be a little lower
    # than MemTotal, never makes the node "Low RealMemory" (drained).
    mem_mb=$((mem_kb / 1024))
    local margin=$((mem_mb / 10))
    [ "$margin" -lt 512 ] && margin=512
    mem_mb=$((mem_mb - margin))
    [ "$mem_mb" -lt 256 ] && mem_mb=256
    cat >"$CONF" <<EOF
# Written by scripts/slurm-local.sh: one node (this host), no accounting, no cgroups.
ClusterName=attnscope-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/slurmd-%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups: process tracking by the parent-pid tree, no task containment, no accounting.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
# Cores are the consumable (memory is not), so array tasks pack onto the node's CPUs.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
KillWait=10
MaxArraySize=1001
MinJobAge=300
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    # slurmd reads cgroup.conf if it exists beside slurm.conf; an explicit one that asks for nothing
    # keeps it from probing the (here v1 / hybrid, maybe read-only) cgroup hierarchy for constraints.
    cat >"$DIR/cgroup.conf" <<EOF
ConstrainCores=no
ConstrainRAMSpace=no
ConstrainDevices=no
ConstrainSwapSpace=no
EOF
}

start_munge() {
    mkdir -p "$DIR/munge"
    # 0755: munged wants the socket's directory searchable by all (the key itself is 0400).
    chmod 0755 "$DIR/munge"
    if [ ! -s "$DIR/munge/munge.key" ]; then
        dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
        chmod 0400 "$DIR/munge/munge.key"
    fi
    if pid_alive "$DIR/run/munged.pid"; then return 0; fi
    # munged as root with --force: the socket and key live in our private dir, not /run/munge and
    # /etc/munge (whose ownership and a system munged we leave alone).
    munged --force --socket="$MUNGE_SOCKET" --key-file="$DIR/munge/munge.key" \
        --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" \
        --seed-file="$DIR/munge/munged.seed" 2>>"$DIR/log/munged.log" \
        || fail "munged did not start"
    local i
    for i in $(seq 1 50); do
        if munge -n -S "$MUNGE_SOCKET" 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    fail "munge credentials do not round-trip through $MUNGE_SOCKET"
}

start() {
    for c in slurmctld slurmd sbatch sinfo munged munge; do
        command -v "$c" >/dev/null || { log "$c not found: run '$0 install' first"; exit 1; }
    done
    mkdir -p "$DIR"/{state,spool,run,log} "$DIR/spool/slurmd-$(hostname -s)"
    chmod 0755 "$DIR"
    export SLURM_CONF=$CONF
    write_conf
    start_munge
    if ! pid_alive "$DIR/run/slurmctld.pid"; then
        # -c: start with a clean state (the state dir is ours alone).
        slurmctld -c -f "$CONF" 2>>"$DIR/log/slurmctld.log" || fail "slurmctld did not start"
    fi
    local host
    host=$(hostname -s)
    if ! pid_alive "$DIR/run/slurmd-$host.pid"; then
        slurmd -f "$CONF" 2>>"$DIR/log/slurmd.log" || fail "slurmd did not start"
    fi
    local deadline=$((SECONDS + ${ATTNSCOPE_SLURM_START_TIMEOUT:-60})) state=""
    while [ $SECONDS -lt $deadline ]; do
        state=$(sinfo -h -o %T 2>/dev/null | head -n 1 || true)
        if [ "$state" = idle ]; then
            log "cluster up: node $host idle, conf $CONF"
            print_env
            return 0
        fi
        # A node that came up drained/down with ReturnToService=2 should not happen; resume it once.
        case "$state" in
            drain* | down*) scontrol update nodename="$host" state=resume 2>/dev/null || true ;;
        esac
        pid_alive "$DIR/run/slurmctld.pid" || fail "slurmctld exited"
        sleep 1
    done
    sinfo -N -l >&2 2>&1 || true
    scontrol show node "$host" >&2 2>&1 || true
    fail "node not idle after ${ATTNSCOPE_SLURM_START_TIMEOUT:-60} s (last state: '${state:-none}')"
}

stop_pid() {
    local f=$1 name=$2 pid i
    [ -f "$f" ] || return 0
    pid=$(cat "$f")
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    log "$name ($pid) did not stop on SIGTERM; SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}

stop() {
    if [ ! -d "$DIR" ]; then return 0; fi
    export SLURM_CONF=$CONF
    if [ -f "$CONF" ] && pid_alive "$DIR/run/slurmctld.pid"; then
        scancel --quiet --user="$(id -un)" 2>/dev/null || true
        scancel --quiet --state=PENDING 2>/dev/null || true
        # Let running jobs end (KillWait=10 s, then SIGKILL) so that no slurmstepd outlives slurmd.
        local i
        for i in $(seq 1 30); do
            [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break
            sleep 1
        done
    fi
    local host
    host=$(hostname -s)
    stop_pid "$DIR/run/slurmd-$host.pid" slurmd
    stop_pid "$DIR/run/slurmctld.pid" slurmctld
    stop_pid "$DIR/run/munged.pid" munged
    rm -rf "$DIR"
    log "stopped; removed $DIR"
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    env) print_env ;;
    logs) log_tails ;;
    *)
        echo "usage: $0 install|start|stop|env|logs" >&2
        exit 2
        ;;
esac
