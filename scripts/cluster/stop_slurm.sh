#!/usr/bin/env bash
# Stop the daemons start_slurm.sh started (by their pid files); `--munge` also stops munged.
set -euo pipefail
DIR=${SLURM_TEST_DIR:-/var/tmp/gru-mm-slurm}

stop() {  # stop NAME PIDFILE: TERM, then wait up to 10 s for the process to go.
    local pid
    [[ -s $2 ]] || return 0
    pid=$(cat "$2")
    if kill -0 "$pid" 2>/dev/null; then
        echo "stop_slurm: stopping $1 ($pid)" >&2
        kill "$pid"
        for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    fi
    rm -f "$2"
}
stop slurmd "$DIR/slurmd.pid"
stop slurmctld "$DIR/slurmctld.pid"
if [[ ${1:-} == --munge ]]; then
    stop munged /run/munge/munged.pid
fi
