# shellcheck shell=bash disable=SC2034  # variables used by the scripts that source this
# What deploy/local/up and deploy/local/down share: where the local stack
# keeps its files, which ports it uses, whose it is, and how to tell that a
# process it started is still alive. Sourced; expects $root (the repository).
#
#   .local/pg/data      the PostgreSQL 15 cluster       .local/pg/sock  its socket
#   .local/nats         the JetStream store             .local/pgpass   role cms's password
#   .local/log/NAME.log each process's output           .local/run/NAME.pid  its pid
#   .local/pgpass.d/    the services' login roles' passwords (one pgpass file each)
#   .local/nats-auth/   nats.conf and creds/<user>.creds  .local/tls/  CA and certificates (--tls)
#
# As root everything long-running belongs to the system user `cms` (the
# owner of an existing cluster wins); otherwise to the user running the script.
#
# Scaled out on one machine (tests/cluster): CMS_LOCAL_NATS_NODES servers in
# one NATS cluster (1 to 5; routes on CMS_LOCAL_NATS_CLUSTER_PORT, 6222;
# every stream with min(nodes, 3) replicas), CMS_LOCAL_REPLICAS processes of
# each service and CMS_LOCAL_WORKERS workers (1 each by default). The k-th
# instance of NAME (k from 0) is NAME, then NAME@1, NAME@2 ...: its pid in
# run/NAME@k.pid, its log in log/NAME@k.log, each of its ports k times
# CMS_LOCAL_PORT_STRIDE (100) above the first's.
#
# CMS_LOCAL_DIR puts the stack's files elsewhere than .local (a second stack
# beside the first, as tests/chaos and tests/soak run one); such a stack
# installs nothing under ~/.config/cms. CMS_LOCAL_BIN_DIR runs binaries built
# elsewhere than build/release/bin (up then builds nothing).

: "${root:?the repository root must be set}"
local_dir=${CMS_LOCAL_DIR:-$root/.local}
pgdata=$local_dir/pg/data
pgsock=$local_dir/pg/sock
pgpass=$local_dir/pgpass
natsdir=$local_dir/nats
logdir=$local_dir/log
rundir=$local_dir/run
pgbin=/usr/lib/postgresql/15/bin
# The stack's own clients say where and how they connect: libpq's variables
# from the caller's shell (another server's PGSSLMODE=verify-full, a PGHOST)
# must not steer them elsewhere. PGPASSFILE is set where it is used.
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGSERVICE PGSERVICEFILE PGOPTIONS \
    PGSSLMODE PGREQUIRESSL PGSSLROOTCERT PGSSLCERT PGSSLKEY PGSSLCRL PGPASSWORD PGPASSFILE
# Debian installs nats-server in /usr/sbin, which a normal user's PATH lacks.
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH=$PATH:/usr/sbin ;; esac
bindir=${CMS_LOCAL_BIN_DIR:-$root/build/release/bin}

pg_port=${CMS_LOCAL_PG_PORT:-54329}
nats_port=${CMS_LOCAL_NATS_PORT:-4222}
nats_monitor_port=${CMS_LOCAL_NATS_MONITOR_PORT:-8222}
wait_s=${CMS_LOCAL_TIMEOUT:-60}
nats_nodes=${CMS_LOCAL_NATS_NODES:-1}
nats_cluster_port=${CMS_LOCAL_NATS_CLUSTER_PORT:-6222}
replicas=${CMS_LOCAL_REPLICAS:-1}
workers=${CMS_LOCAL_WORKERS:-1}
port_stride=${CMS_LOCAL_PORT_STRIDE:-100}

# instances, instance_index, strided_port: the names and ports of instances
# shellcheck source=deploy/lib/instances.sh
. "$(dirname "${BASH_SOURCE[0]}")/instances.sh"

# The instances of NAME that have a pid file: what down stops.
started_instances()
{
    local f
    for f in "$rundir/$1.pid" "$rundir/$1"@*.pid; do
        [ -f "$f" ] && basename "$f" .pid
    done
    return 0
}

# The services up starts when their binaries exist, and their HTTP ports.
services=(cms-identity cms-contracts cms-training cms-audit)
declare -A http_port=(
    [cms-identity]=${CMS_LOCAL_IDENTITY_HTTP:-8081}
    [cms-contracts]=${CMS_LOCAL_CONTRACTS_HTTP:-8082}
    [cms-training]=${CMS_LOCAL_TRAINING_HTTP:-8083}
    [cms-audit]=${CMS_LOCAL_AUDIT_HTTP:-8084}
)

run_user=$(id -un)
if [ "$(id -u)" = 0 ]; then
    run_user=cms
    if [ -d "$pgdata" ]; then
        run_user=$(stat -c %U "$pgdata")
    fi
fi

say()
{
    echo "==> $*"
}

# owner_cmd: the prefix that runs a command as the stack's owner. It execs in
# place (no extra process), so `setsid "${owner_cmd[@]}" cmd &` leaves cmd's
# own pid in $!. Call set_owner_cmd again once the owner exists.
owner_cmd=()
set_owner_cmd()
{
    owner_cmd=()
    if [ "$(id -u)" = 0 ] && [ "$run_user" != root ] && id "$run_user" >/dev/null 2>&1; then
        owner_cmd=(setpriv --reuid="$run_user" --regid="$(id -g "$run_user")" --init-groups --
            env HOME="$(getent passwd "$run_user" | cut -d: -f6)" USER="$run_user"
            LOGNAME="$run_user")
    fi
}
set_owner_cmd

as_owner()
{
    "${owner_cmd[@]}" "$@"
}

# Prints the pid in .local/run/NAME.pid when that process is alive and is
# still NAME's binary (a recycled pid is not), else nothing. Returns 0 when
# alive.
pid_alive()
{
    local name=${1%@*} f=$rundir/$1.pid pid comm stat
    [ -f "$f" ] || return 1
    pid=$(cat "$f" 2>/dev/null || true)
    case $pid in '' | *[!0-9]*) return 1 ;; esac
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    # /proc/PID/comm holds at most 15 characters of the name
    [ -n "$comm" ] && [ "$comm" = "${name:0:15}" ] || return 1
    # an exited process waiting to be reaped (state Z or X) is not alive
    stat=$(cat "/proc/$pid/stat" 2>/dev/null || true)
    stat=${stat##*) }
    case ${stat%% *} in '' | Z | X) return 1 ;; esac
    echo "$pid"
}

pg_running()
{
    [ -f "$pgdata/PG_VERSION" ] && as_owner "$pgbin/pg_ctl" -D "$pgdata" status >/dev/null 2>&1
}

port_in_use()
{
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Prints the HTTP status of GET http://127.0.0.1:PORT/PATH (000 if none).
http_status()
{
    local port=$1 path=$2 line code=000
    if command -v curl >/dev/null 2>&1; then
        code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$port$path" || true)
    elif { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then
        printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' \
            "$path" "$port" >&3 2>/dev/null || true
        if IFS=' ' read -r -t 2 _ line _ <&3; then
            code=$line
        fi
        exec 3<&- 3>&-
    fi
    echo "${code:-000}"
}

# Prints the last lines of a log, to show why something failed.
show_log()
{
    local f=$1
    [ -s "$f" ] || { echo "    ($f is empty or missing)"; return 0; }
    echo "--- last 30 lines of $f"
    tail -n 30 "$f" | sed 's/^/    /'
    echo "---"
}
