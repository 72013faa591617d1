#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, without systemd (for trying `cluster=slurm` and
# for tests/test_slurm.py). Debian's slurm-wlm + munge; no cgroups, no slurmdbd.
#   scripts/slurm_local.sh start   # installs the packages if missing (apt), starts the daemons
#   scripts/slurm_local.sh stop
#   scripts/slurm_local.sh env     # the two variables clients need (eval "$(... env)")
# Everything lives in $SLURM_LOCAL_DIR (default /tmp/emg2qwerty-slurm): slurm.conf, state,
# logs, and bin/sacct, a stand-in that answers submitit's job-state queries from
# `squeue --states=all` (the real sacct needs slurmdbd; without it submitit sees every job as
# UNKNOWN). Needs root (slurmd switches to the submitting user, munged needs its key).
set -euo pipefail
cmd=${1:-start}
dir=${SLURM_LOCAL_DIR:-/tmp/emg2qwerty-slurm}
ctld_port=${SLURM_LOCAL_CTLD_PORT:-6817}
slurmd_port=${SLURM_LOCAL_SLURMD_PORT:-6818}

die() {
  echo "slurm_local.sh: $*" >&2
  exit 2
}

install_packages() {
  command -v slurmctld >/dev/null && command -v munged >/dev/null && return
  [[ $(id -u) == 0 ]] || die "slurm-wlm and munge are missing and this is not root"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

write_conf() {
  local cpus mem host
  cpus=$(nproc)
  mem=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024))
  host=$(hostname -s)
  mkdir -p "$dir"/{state,spool,bin}
  cat >"$dir/slurm.conf.tmp" <<EOF
ClusterName=emg2qwerty-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# a requeued job may start again once its credential expired: 10 s instead of 120 s
AuthInfo=cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
# no cgroups here: plain process tracking, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2,sched_min_interval=100000
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
JobRequeue=1
ReturnToService=2
MinJobAge=3600
KillWait=5
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$dir/slurm.conf.tmp" "$dir/slurm.conf"
  cat >"$dir/bin/sacct" <<'EOF'
#!/usr/bin/env bash
# sacct as submitit calls it (-o JobID,State,NodeList --parsable2 -j ID ...), answered from
# squeue --states=all: this cluster has no accounting database (slurmdbd).
ids=()
while [[ $# -gt 0 ]]; do
  case "$1" in
  -j) ids+=("$2"); shift 2 ;;
  *) shift ;;
  esac
done
echo "JobID|State|NodeList"
squeue --states=all -h -o '%i|%T|%N' | awk -F'|' -v ids="${ids[*]}" '
  BEGIN { n = split(ids, a, " "); for (i = 1; i <= n; i++) want[a[i]] = 1 }
  { split($1, p, "_"); if (n == 0 || (p[1] in want)) print }'
EOF
  chmod +x "$dir/bin/sacct"
}

start() {
  [[ $(id -u) == 0 ]] || die "needs root (slurmd and munged)"
  install_packages
  write_conf
  export SLURM_CONF=$dir/slurm.conf
  if ! pgrep -x munged >/dev/null; then
    install -d -o munge -g munge -m 0755 /run/munge
    [[ -s /etc/munge/munge.key ]] || runuser -u munge -- mungekey --create 2>/dev/null ||
      die "no /etc/munge/munge.key"
    runuser -u munge -- /usr/sbin/munged
  fi
  [[ -f $dir/slurmctld.pid ]] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null ||
    slurmctld -f "$SLURM_CONF" -i
  [[ -f $dir/slurmd.pid ]] && kill -0 "$(cat "$dir/slurmd.pid")" 2>/dev/null ||
    slurmd -f "$SLURM_CONF" -N "$(hostname -s)"
  for _ in $(seq 60); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
      echo "SLURM is up (logs in $dir). For clients: eval \"\$($0 env)\""
      return
    fi
    sleep 0.5
  done
  die "the node did not become idle; see $dir/slurmctld.log and $dir/slurmd.log"
}

stop() {
  export SLURM_CONF=$dir/slurm.conf
  [[ -f $SLURM_CONF ]] && scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
  for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid"; do
    if [[ -f $pidfile ]]; then
      pid=$(cat "$pidfile")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      rm -f "$pidfile"
    fi
  done
  echo "SLURM stopped (munged left running; state kept in $dir)"
}

case "$cmd" in
start) start ;;
stop) stop ;;
env) echo "export SLURM_CONF=$dir/slurm.conf PATH=$dir/bin:\$PATH" ;;
*) die "usage: $0 start|stop|env" ;;
esac
