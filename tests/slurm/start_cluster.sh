#!/usr/bin/env bash
# Start a one-node SLURM test cluster on this machine (Debian/Ubuntu, run as root).
#
#   tests/slurm/start_cluster.sh          # start it (or check the one already running)
#
# What it does, each step only when needed, so running it twice is harmless:
#   1. installs the Debian packages slurm-wlm and munge (apt-get, non-interactive) if missing;
#   2. writes /etc/slurm/slurm.conf for this machine: one node named after `hostname -s`, with
#      the CPUs and memory slurmd detects (`slurmd -C`), one partition `test`, cons_tres
#      scheduling, no cgroups and no accounting database (so `sacct` does not work: query jobs
#      with `squeue`, which keeps finished jobs for MinJobAge = 1 day);
#   3. starts munged, slurmctld and slurmd as plain daemons (no systemd needed);
#   4. waits until `sinfo` shows the node idle.
# It exits non-zero with a message naming the step that failed and the log to read.
#
# A slurm.conf that this script did not write is never overwritten: the script stops instead.
# Stop the cluster with `scontrol shutdown` (slurmctld and slurmd), then `pkill -F
# /run/munge/munged.pid` if munge is no longer needed.
set -euo pipefail

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
MARKER="# Written by tests/slurm/start_cluster.sh (one-node test cluster)."
SPOOL=/var/spool/slurm-test
LOGS=/var/log/slurm-test
RUN=/run/slurm-test
PARTITION=test
WAIT_S=${SLURM_TEST_WAIT_S:-60}

fail() {
    echo "start_cluster.sh: $*" >&2
    exit 1
}

log() {
    echo "start_cluster.sh: $*"
}

running() {  # is a daemon of this name running (any user)?
    pgrep -x "$1" >/dev/null 2>&1
}

node_state() {  # the node's state as sinfo reports it, empty if slurmctld does not answer
    # A trailing * (node not responding) is kept, so "idle*" does not count as idle.
    sinfo --noheader --nodes "$NODE" --format %T 2>/dev/null | head -n 1 | tr -d '~#!%$@^-' || true
}

wait_for_idle() {
    local state="" deadline=$((SECONDS + WAIT_S)) resumed=0
    while ((SECONDS < deadline)); do
        state=$(node_state)
        case "$state" in
            idle | mixed | allocated | completing)
                log "node $NODE is $state (partition $PARTITION); the cluster is up"
                return 0
                ;;
            drain* | down*)
                # ReturnToService=2 brings a node back when slurmd registers; a node drained
                # by an earlier run with another configuration needs a nudge, once.
                if ((!resumed)); then
                    scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
                    resumed=1
                fi
                ;;
        esac
        sleep 1
    done
    local reason
    reason=$(sinfo --noheader --nodes "$NODE" --format %E 2>/dev/null || true)
    fail "node $NODE did not become idle within ${WAIT_S}s (state: '${state:-no answer from slurmctld}'${reason:+, reason: $reason}); see $LOGS/slurmctld.log and $LOGS/slurmd.log"
}

[[ $(uname -s) == Linux ]] || fail "needs Linux"
NODE=$(hostname -s)
[[ -n $NODE ]] || fail "hostname -s is empty"

# Already running (started by this script earlier, or a real installation): just check it.
if running slurmctld && running slurmd; then
    log "slurmctld and slurmd are already running"
    wait_for_idle
    exit 0
fi

[[ $(id -u) -eq 0 ]] || fail "must run as root to install packages and start the SLURM daemons"

# 1. Packages.
missing=()
for pkg in slurm-wlm munge; do
    dpkg-query --show --showformat '${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
        missing+=("$pkg")
done
if ((${#missing[@]})); then
    command -v apt-get >/dev/null || fail "packages ${missing[*]} are missing and there is no apt-get"
    log "installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install --yes --quiet --no-install-recommends "${missing[@]}" >/tmp/slurm-test-apt.log 2>&1; then
        apt-get update --quiet >>/tmp/slurm-test-apt.log 2>&1 ||
            fail "apt-get update failed; see /tmp/slurm-test-apt.log"
        apt-get install --yes --quiet --no-install-recommends "${missing[@]}" >>/tmp/slurm-test-apt.log 2>&1 ||
            fail "apt-get install ${missing[*]} failed; see /tmp/slurm-test-apt.log"
    fi
fi
for cmd in munged slurmctld slurmd sinfo sbatch squeue scontrol; do
    command -v "$cmd" >/dev/null || fail "$cmd not found after installing slurm-wlm and munge"
done

# 2. Configuration.
mkdir -p "$CONF_DIR" "$SPOOL/ctld" "$SPOOL/d" "$LOGS" "$RUN"
if [[ -e $CONF ]] && ! grep -qxF "$MARKER" "$CONF"; then
    fail "$CONF exists and was not written by this script; not touching it (move it away to use the test cluster)"
fi
# `slurmd -C` prints the hardware line slurmd itself will register with, so the node never
# disagrees with its configuration (a node with less memory than configured is drained).
hardware=$(slurmd -C 2>/dev/null | head -n 1) || true
[[ $hardware == NodeName=* ]] || fail "'slurmd -C' did not describe this machine (got: '$hardware')"
hardware=${hardware#NodeName=* }
cat >"$CONF.new" <<EOF
$MARKER
# Regenerated on every start while the daemons are down; edit the script, not this file.
ClusterName=testcluster
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
# No cgroups: processes are tracked through their parent process ids, tasks are not confined.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# A node that was down comes back as soon as its slurmd registers with a valid configuration.
ReturnToService=2
# Finished jobs stay visible to squeue for a day (there is no accounting database for sacct).
MinJobAge=86400
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$NODE $hardware State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
mv "$CONF.new" "$CONF"

# 3. Daemons.
if ! running munged; then
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        mkdir -p /etc/munge
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile /etc/munge/munge.key --force
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        fi
        chown munge:munge /etc/munge/munge.key 2>/dev/null || true
        chmod 0400 /etc/munge/munge.key
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
    chmod 0755 /run/munge
    log "starting munged"
    if id munge >/dev/null 2>&1; then
        su -s /bin/sh munge -c munged || runuser -u munge -- munged ||
            fail "munged did not start; see /var/log/munge/munged.log"
    else
        munged --force || fail "munged did not start; see /var/log/munge/munged.log"
    fi
fi
munge -n </dev/null | unmunge >/dev/null 2>&1 || fail "munge does not work (munge -n | unmunge failed); see /var/log/munge/munged.log"

if ! running slurmctld; then
    log "starting slurmctld"
    # -i: ignore state files from an earlier run with another configuration.
    slurmctld -i || fail "slurmctld did not start; see $LOGS/slurmctld.log"
fi
for _ in $(seq 1 30); do
    scontrol ping 2>/dev/null | grep -q "is UP" && break
    sleep 1
done
scontrol ping 2>/dev/null | grep -q "is UP" || fail "slurmctld does not answer; see $LOGS/slurmctld.log"

if ! running slurmd; then
    log "starting slurmd"
    slurmd || fail "slurmd did not start; see $LOGS/slurmd.log"
fi

# 4. Ready?
wait_for_idle
