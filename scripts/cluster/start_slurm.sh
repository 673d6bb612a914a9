#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine (Debian 12, run as root); safe to run twice.
# Prints `export SLURM_CONF=...` on its last line; SLURM_TEST_DIR (default /var/tmp/gru-mm-slurm) holds
# the config, state, spool and logs.
set -euo pipefail

DIR=${SLURM_TEST_DIR:-/var/tmp/gru-mm-slurm}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CONF=$DIR/slurm.conf
log() { echo "start_slurm: $*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
    log "must run as root (it installs packages and starts munged, slurmctld and slurmd)"; exit 1
fi

# 1. Packages: install only what is missing, so a second run does not touch apt.
missing=()
for pair in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || [[ -x /usr/sbin/${pair%%:*} ]] || missing+=("${pair##*:}")
done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Containers have no init system: stop the packages' postinst from trying to start services.
    policy=/usr/sbin/policy-rc.d; own_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; own_policy=1
        trap 'rm -f "$policy"' EXIT  # also when the install fails: the policy would block services for good
    fi
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >&2
    ((own_policy)) && rm -f "$policy"
fi

# 2. munge: a key (1024 random bytes, mode 400, owned by munge) and a running munged.
if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating /etc/munge/munge.key"
    install -d -o munge -g munge -m 700 /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
fi
install -d -o munge -g munge -m 755 /run/munge
install -d -o munge -g munge -m 700 /var/lib/munge /var/log/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
    munge -n | unmunge >/dev/null || { log "munged does not answer (see /var/log/munge/munged.log)"; exit 1; }
fi

# 3. slurm.conf from the template: this host, its CPUs, 90% of its memory (slurmd marks a node
#    INVALID when the config claims more memory than it finds).
mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(free -m | awk '/^Mem:/ {print int($2 * 0.9)}')
new_conf=$(sed -e "s|@HOST@|$host|g" -e "s|@DIR@|$DIR|g" -e "s|@CPUS@|$cpus|g" -e "s|@MEM_MB@|$mem_mb|g" \
    "$HERE/slurm.conf.in")

running() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
if [[ ! -f $CONF ]] || [[ $(cat "$CONF") != "$new_conf" ]]; then
    # A changed config needs fresh daemons; stop any we started before.
    if running "$DIR/slurmctld.pid" || running "$DIR/slurmd.pid"; then
        log "config changed: restarting the daemons"
        "$HERE/stop_slurm.sh"
    fi
    printf '%s\n' "$new_conf" >"$CONF"
fi
export SLURM_CONF=$CONF

# 4. Daemons (both fork into the background and write their pid files).
running "$DIR/slurmctld.pid" || { log "starting slurmctld"; slurmctld -f "$CONF"; }
running "$DIR/slurmd.pid" || { log "starting slurmd"; slurmd -f "$CONF"; }

# 5. Wait for the node to be idle; a node left down/drained by an earlier run is resumed.
state=""
for i in $(seq 60); do
    state=$(sinfo -h -N -n "$host" -o %t 2>/dev/null | head -1 || true)
    case $state in
        idle|mix|alloc) break ;;
        down*|drain*|drng*|fail*) ((i % 5 == 1)) && scontrol update NodeName="$host" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 1
done
if [[ ! $state =~ ^(idle|mix|alloc) ]]; then
    log "node $host is '${state:-unknown}' after 60 s; see $DIR/log/ctld.log and $DIR/log/slurmd.log"; exit 1
fi
log "node $host is $state"
echo "export SLURM_CONF=$CONF"
