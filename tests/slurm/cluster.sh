#!/usr/bin/env bash
# A real single-node Slurm cluster on localhost, with accounting (slurmdbd + MariaDB), for the tests.
# Usage: cluster.sh start DIR | stop DIR.   Needs root and Debian's slurm-wlm, slurmdbd, munge, mariadb-server.
# State, logs and database live under DIR. The configuration goes to /etc/slurm/{slurm,slurmdbd}.conf, where
# Slurm's tools look by default (the Slurm executor's job steps drop SLURM_CONF from their environment, so a
# private path would not reach them); start refuses to overwrite an existing slurm.conf, stop removes ours.
set -euo pipefail
cmd=${1:?start|stop}; dir=$(realpath -m "${2:?directory}")
cluster=sdgmtest
dbport=${SDGM_SLURM_DBPORT:-23306}; dbdport=${SDGM_SLURM_DBDPORT:-26819}
ctldport=${SDGM_SLURM_CTLDPORT:-26817}; slurmdport=${SDGM_SLURM_SLURMDPORT:-26818}
node=$(hostname -s)

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local t=$1 what=$2; shift 2
  for _ in $(seq $((t * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "cluster.sh: timed out waiting for $what" >&2; return 1
}

stop() {
  for pid in slurmd slurmctld slurmdbd mariadb munged; do
    f="$dir/run/$pid.pid"
    if [ -f "$f" ]; then kill "$(cat "$f" 2>/dev/null)" 2>/dev/null || true; fi
  done
  sleep 1
  for pid in slurmd slurmctld slurmdbd mariadb munged; do
    f="$dir/run/$pid.pid"
    if [ -f "$f" ]; then kill -9 "$(cat "$f" 2>/dev/null)" 2>/dev/null || true; rm -f "$f"; fi
  done
  if [ -f "$dir/run/munge_dir" ]; then rm -rf "$(cat "$dir/run/munge_dir")"; fi
  if grep -qs "^# sdgm-bench test cluster" /etc/slurm/slurm.conf; then rm -f /etc/slurm/slurm.conf /etc/slurm/slurmdbd.conf; fi
}

start() {
  if [ -e /etc/slurm/slurm.conf ] && ! grep -q "^# sdgm-bench test cluster" /etc/slurm/slurm.conf; then
    echo "cluster.sh: /etc/slurm/slurm.conf exists and is not ours; refusing to overwrite it" >&2; exit 1
  fi
  mkdir -p "$dir"/{run,log,state,spool,db} /etc/slurm
  export SLURM_CONF=/etc/slurm/slurm.conf

  # munge: key and daemon as the munge user, in a directory that user can reach (DIR may be private to root)
  local mdir
  mdir=$(mktemp -d /tmp/sdgm-munge.XXXXXX); chmod 755 "$mdir"; echo "$mdir" >"$dir/run/munge_dir"
  chown munge: "$mdir"
  dd if=/dev/urandom of="$mdir/munge.key" bs=1024 count=1 status=none
  chown munge: "$mdir/munge.key"; chmod 400 "$mdir/munge.key"
  mkdir -p /run/munge && chown munge: /run/munge
  runuser -u munge -- /usr/sbin/munged --key-file="$mdir/munge.key" --pid-file="$mdir/munged.pid" \
      --log-file="$mdir/munged.log" --seed-file="$mdir/munged.seed" --force
  wait_for 10 munged test -f "$mdir/munged.pid"
  cp "$mdir/munged.pid" "$dir/run/munged.pid"
  munge -n | unmunge >/dev/null

  # MariaDB on 127.0.0.1 with the accounting database
  mariadb-install-db --user=root --datadir="$dir/db" --auth-root-authentication-method=normal >"$dir/log/mariadb-install.log" 2>&1
  mariadbd --user=root --datadir="$dir/db" --port="$dbport" --bind-address=127.0.0.1 --socket="$dir/run/mysql.sock" \
      --pid-file="$dir/run/mariadb.pid" --log-error="$dir/log/mariadb.log" --skip-grant-tables=0 &
  wait_for 60 mariadb mariadb --socket="$dir/run/mysql.sock" -u root -e "select 1"
  mariadb --socket="$dir/run/mysql.sock" -u root -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
      CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmpass';
      GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"

  cat >/etc/slurm/slurmdbd.conf <<CONF
# sdgm-bench test cluster
AuthType=auth/munge
AuthInfo=socket=/run/munge/munge.socket.2
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$dbdport
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$dbport
StorageUser=slurm
StoragePass=slurmpass
StorageLoc=slurm_acct_db
PidFile=$dir/run/slurmdbd.pid
LogFile=$dir/log/slurmdbd.log
CONF
  chmod 600 /etc/slurm/slurmdbd.conf

  local cpus mem
  cpus=$(nproc); mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))
  cat >"$SLURM_CONF" <<CONF
# sdgm-bench test cluster (tests/slurm/cluster.sh); removed by 'cluster.sh stop'
ClusterName=$cluster
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctldport
SlurmdPort=$slurmdport
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$dbdport
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ReturnToService=2
MinJobAge=600
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

  slurmdbd
  wait_for 30 slurmdbd sacctmgr -n list cluster
  sacctmgr -i add cluster "$cluster" >/dev/null
  slurmctld
  wait_for 30 slurmctld scontrol ping
  slurmd
  wait_for 60 "node idle" bash -c "sinfo -h -o %T | grep -q idle"
  echo "cluster.sh: Slurm up ($SLURM_CONF)"
}

case $cmd in
  start) start ;;
  stop) stop ;;
  *) echo "usage: cluster.sh start|stop DIR" >&2; exit 2 ;;
esac
