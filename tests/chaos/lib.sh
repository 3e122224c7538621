# shellcheck shell=bash disable=SC2154  # chaos_name, chaos_summary, chaos_plan_s: the script's
# What the chaos scripts share (sourced by tests/chaos/<fault>): a stack of
# its own on free ports (deploy/local/up with CMS_LOCAL_DIR), the streams
# under test (events from cmsctl gen replayed in chunks, commands from
# cms-chaos load), the checks afterwards, and the count of passed and failed
# checks. A script sets chaos_name, chaos_summary and chaos_plan_s (how long
# its faults take, so that the events are spread over them), defines
# chaos_faults (the faults, each in turn), then calls chaos_main "$@".
#
# Layout of a run's folder (/tmp/cms-chaos.XXXX, short: the PostgreSQL
# socket's path must stay under 107 bytes): the stack's own files (pg/,
# nats/, log/, run/, credentials, pgpass, nats-auth/), and chaos/ with the
# events (events-K.pbs, expect-K.txt), the command record (commands.tsv),
# the dead letters (dlq.txt) and the logs of the load and the replay.
#
# Every wait is on a condition with a deadline; the only fixed sleeps are
# faults themselves (a server stopped for 10 s, a service paused past the
# ack wait).

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
pgbin=/usr/lib/postgresql/15/bin
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH=$PATH:/usr/sbin ;; esac

# Defaults; the options of every script override them.
events=200000
bad_fraction=0.01
seed=1
chunk=10000
keep=0
bin_dir=${CMS_CHAOS_BIN_DIR:-}
ack_wait_s=30 # the durables' ack wait (common/bus.c; cms-migrate provision makes them)

n_passed=0
n_failed=0
failed_names=()
t_start=$SECONDS

chaos_usage()
{
    cat <<EOF
usage: ${chaos_prog:-tests/chaos/$chaos_name} [options]

$chaos_summary

While the faults run, events (cmsctl gen, $bad_fraction poison, replayed in
chunks of $chunk) and commands of every service (cms-chaos load: identities,
credentials, contract lifecycles, training jobs run by a cms-worker) flow
through a stack of its own on free ports. Afterwards it checks: every valid
event exactly once in audit_logs and every poison one dead-lettered with its
reason; every command answered, a repeat of each getting the same outcome,
every acknowledged one applied exactly once (and none refused applied);
every contract and job in a state its lifecycle allows, no job over its
budget, no contract ledger overspent; cmsctl audit verify passes; every
service ready. Each check prints a PASS or FAIL line; the last line is
"N passed, N failed".

  --events N         events to replay (default $events)
  --bad-fraction F   share of poison events (default $bad_fraction)
  --seed S           generator seed (default $seed)
  --bin-dir DIR      binaries to run (default: build/chaos/bin, built Release
                     if missing); also CMS_CHAOS_BIN_DIR
  --keep             keep the stack's folder (and leave it stopped)
  -h, --help         this text

Exit status: 0 when every check passed, 1 otherwise, 2 usage error.
EOF
}

chaos_parse()
{
    while [ $# -gt 0 ]; do
        case $1 in
        -h | --help) chaos_usage; exit 0 ;;
        --events) events=${2:?--events needs a number}; shift ;;
        --bad-fraction) bad_fraction=${2:?--bad-fraction needs a number}; shift ;;
        --seed) seed=${2:?--seed needs a number}; shift ;;
        --bin-dir) bin_dir=${2:?--bin-dir needs a folder}; shift ;;
        --keep) keep=1 ;;
        *) echo "${chaos_prog:-tests/chaos/$chaos_name}: unknown argument '$1' (see --help)" >&2; exit 2 ;;
        esac
        shift
    done
    case $events in '' | *[!0-9]*) echo "--events wants a number" >&2; exit 2 ;; esac
    [ "$events" -ge 1000 ] || { echo "--events: at least 1000" >&2; exit 2; }
    [ "$chunk" -le "$events" ] || chunk=$events
}

# --- output ------------------------------------------------------------------------

phase()
{
    echo "--- [$chaos_name $((SECONDS - t_start))s] $*"
}

pass()
{
    n_passed=$((n_passed + 1))
    echo "PASS  $1"
}

# fail NAME [DETAIL...]
fail()
{
    local name=$1
    shift
    n_failed=$((n_failed + 1))
    failed_names+=("$name")
    echo "FAIL  $name${1:+: $*}"
}

# check NAME COMMAND...: PASS when the command succeeds; what it printed is
# the FAIL line's detail.
check()
{
    local name=$1 out rc=0
    shift
    out=$("$@" 2>&1) || rc=$?
    if [ "$rc" = 0 ]; then
        pass "$name"
    else
        fail "$name" "$(printf '%s' "$out" | head -n 8)"
    fi
}

die()
{
    fail "$chaos_name: $*"
    exit 1
}

# wait_for WHAT SECONDS COMMAND...: until the command succeeds, or fails
# the run's check "WHAT" after SECONDS.
wait_for()
{
    local what=$1 limit=$2 t0=$SECONDS
    shift 2
    until "$@" >/dev/null 2>&1; do
        if [ $((SECONDS - t0)) -ge "$limit" ]; then
            fail "$what within ${limit}s"
            return 1
        fi
        sleep 0.2
    done
    echo "      $what ($((SECONDS - t0))s)"
}

# --- the stack ----------------------------------------------------------------------

port_free()
{
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null \
        && ! ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
}

# Eight free ports in a row, from a random base.
pick_ports()
{
    local base i ok
    for _ in $(seq 1 50); do
        base=$((20000 + RANDOM % 30000))
        ok=1
        for i in 0 1 2 3 4 5 6 7; do
            port_free $((base + i)) || { ok=0; break; }
        done
        if [ "$ok" = 1 ]; then
            echo "$base"
            return 0
        fi
    done
    return 1
}

stack_env()
{
    export CMS_LOCAL_DIR=$dir CMS_LOCAL_BIN_DIR=$bin_dir
    export CMS_LOCAL_PG_PORT=$base CMS_LOCAL_NATS_PORT=$((base + 1))
    export CMS_LOCAL_NATS_MONITOR_PORT=$((base + 2)) CMS_LOCAL_IDENTITY_HTTP=$((base + 3))
    export CMS_LOCAL_CONTRACTS_HTTP=$((base + 4)) CMS_LOCAL_TRAINING_HTTP=$((base + 5))
    export CMS_LOCAL_AUDIT_HTTP=$((base + 6))
    export CMS_LOCAL_TIMEOUT=120
    # (not CMS_LOG_LEVEL=warn: up waits for the worker's info line "pulling dispatches")
    declare -gA http=([cms-identity]=$((base + 3)) [cms-contracts]=$((base + 4))
        [cms-training]=$((base + 5)) [cms-audit]=$((base + 6)))
    nats_url=nats://127.0.0.1:$((base + 1))
    monitor=http://127.0.0.1:$((base + 2))
    db="host=127.0.0.1 port=$base user=cms dbname=cms"
}

# Starts whatever of the stack is not running and waits until it is ready.
stack_up()
{
    echo "=== $(date -Is) up" >>"$cdir/up.log"
    "$root/deploy/local/up" >>"$cdir/up.log" 2>&1
}

stack_down()
{
    # a failed run's folder is kept (the stack stopped) as its evidence
    local purge=()
    [ "$keep" = 1 ] || [ "$n_failed" -gt 0 ] || purge=(--purge)
    CMS_LOCAL_STOP_TIMEOUT=15 "$root/deploy/local/down" "${purge[@]}" >>"$cdir/down.log" 2>&1 \
        || echo "tests/chaos/$chaos_name: deploy/local/down failed (see $cdir/down.log)" >&2
}

psql_q()
{
    PGOPTIONS='-c client_min_messages=warning' PGPASSFILE=$dir/pgpass \
        "$pgbin/psql" "$db" -X -q -At -v ON_ERROR_STOP=1 "$@"
}

ctl()
{
    CMS_CREDENTIALS_FILE=$dir/credentials CMS_NATS_URL=$nats_url \
        CMS_NATS_CREDS=$dir/nats-auth/creds/client.creds "$bin_dir/cmsctl" "$@"
}

# The pid of instance NAME (or NAME@k, deploy/lib/local.sh) while it runs.
pid_of()
{
    local p b=${1%@*}
    p=$(cat "$dir/run/$1.pid" 2>/dev/null) || return 1
    [ -n "$p" ] && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "${b:0:15}" ] || return 1
    echo "$p"
}

gone()
{
    ! pid_of "$1" >/dev/null
}

ready()
{
    [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:${http[$1]}/readyz")" = 200 ]
}

all_ready()
{
    local s
    for s in cms-identity cms-contracts cms-training cms-audit; do ready "$s" || return 1; done
    pid_of cms-worker >/dev/null
}

pg_up()
{
    "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$base" -t 1
}

# --- faults --------------------------------------------------------------------------

# kill -9 NAME, then up starts it again and waits until it is ready.
fault_kill()
{
    local name=$1 pid
    pid=$(pid_of "$name") || { fail "fault: $name was running before kill -9"; return 0; }
    phase "fault: kill -9 $name (pid $pid)"
    kill -KILL "$pid"
    wait_for "$name gone after kill -9" 10 gone "$name" || return 0
    stack_up || fail "fault: deploy/local/up restarts $name" "$(tail -n 5 "$cdir/up.log")"
    wait_for "all ready after restarting $name" 120 all_ready || true
}

# PostgreSQL stopped (fast shutdown) for 10 s, then started again.
fault_pg_stop()
{
    phase "fault: stop PostgreSQL for 10 s"
    local owner
    owner=$(stat -c %U "$dir/pg/data")
    setpriv --reuid="$owner" --regid="$(id -g "$owner")" --init-groups -- \
        "$pgbin/pg_ctl" -D "$dir/pg/data" -m fast -w -t 60 stop >>"$cdir/up.log" 2>&1 \
        || fail "fault: pg_ctl stop"
    sleep 10 # the fault itself
    phase "fault: starting PostgreSQL again"
    stack_up || fail "fault: deploy/local/up restarts PostgreSQL" "$(tail -n 5 "$cdir/up.log")"
    wait_for "all ready after PostgreSQL came back" 120 all_ready || true
}

# nats-server stopped (SIGTERM) for 10 s, then started again on the same
# JetStream file store.
fault_nats_stop()
{
    local pid
    pid=$(pid_of nats-server) || { fail "fault: nats-server was running"; return 0; }
    phase "fault: stop nats-server for 10 s (pid $pid)"
    kill -TERM "$pid"
    wait_for "nats-server stopped" 30 gone nats-server || return 0
    sleep 10 # the fault itself
    phase "fault: starting nats-server again"
    stack_up || fail "fault: deploy/local/up restarts nats-server" "$(tail -n 5 "$cdir/up.log")"
    wait_for "all ready after nats-server came back" 120 all_ready || true
}

# SIGSTOP NAME for longer than the ack wait, then SIGCONT.
fault_sigstop()
{
    local name=$1 pid secs=$((ack_wait_s + 5))
    pid=$(pid_of "$name") || { fail "fault: $name was running before SIGSTOP"; return 0; }
    phase "fault: SIGSTOP $name for ${secs}s (ack wait ${ack_wait_s}s)"
    kill -STOP "$pid"
    sleep "$secs" # the fault itself
    kill -CONT "$pid"
    phase "fault: SIGCONT $name"
    wait_for "all ready after $name continued" 120 all_ready || true
}

# The number of messages a durable has not had acked (pending + ack pending).
durable_backlog()
{
    curl -s -m 5 "$monitor/jsz?consumers=true" | jq -r --arg d "$1" \
        '[.account_details[]?.stream_detail[]?.consumer_detail[]? | select(.name == $d)
          | .num_pending + .num_ack_pending] | add // 0'
}

durable_max_ack_pending()
{
    curl -s -m 5 "$monitor/jsz?consumers=true&config=true" | jq -r --arg d "$1" \
        '[.account_details[]?.stream_detail[]?.consumer_detail[]? | select(.name == $d)
          | .config.max_ack_pending] | max // 0'
}

backlog_over()
{
    [ "$(durable_backlog "$1")" -gt "$2" ]
}

backlog_under()
{
    [ "$(durable_backlog "$1")" -le "$2" ]
}

# Freezes the service behind durable D (SIGSTOP) until D holds more
# messages than its in-flight limit (max_ack_pending) while events keep
# coming, then lets it go and waits until it has worked the backlog off.
fault_backlog()
{
    local d=$1 name pid limit
    case $d in
    audit) name=cms-audit ;;
    contracts-*) name=cms-contracts ;;
    training-*) name=cms-training ;;
    *) fail "fault: no service for durable $d"; return 0 ;;
    esac
    limit=$(durable_max_ack_pending "$d")
    [ "${limit:-0}" -gt 0 ] || { fail "fault: durable $d has a max_ack_pending"; return 0; }
    pid=$(pid_of "$name") || { fail "fault: $name was running"; return 0; }
    phase "fault: $name frozen until durable $d holds more than $((2 * limit)) (twice its max_ack_pending, $limit)"
    kill -STOP "$pid"
    wait_for "durable $d past twice its in-flight limit" 120 backlog_over "$d" $((2 * limit)) || true
    kill -CONT "$pid"
    phase "fault: $name let go with $(durable_backlog "$d") messages on $d"
    wait_for "durable $d worked down to its in-flight limit" 300 backlog_under "$d" "$limit" || true
    wait_for "all ready after the backlog" 120 all_ready || true
}

# --- the streams -----------------------------------------------------------------------

# Writes the events in chunks (each its own seed, its actors in the
# database) and what each record should become.
make_events()
{
    local k n left=$events
    nchunks=0
    while [ "$left" -gt 0 ]; do
        n=$chunk
        [ "$n" -le "$left" ] || n=$left
        k=$nchunks
        PGPASSFILE=$dir/pgpass "$bin_dir/cmsctl" gen --count "$n" --bad-fraction "$bad_fraction" \
            --seed $((seed * 1000 + k)) --out "$cdir/events-$k.pbs" --seed-actors \
            --database-url "$db" >"$cdir/gen-$k.log" 2>&1 \
            || die "cmsctl gen (see $cdir/gen-$k.log)"
        "$bin_dir/cms-chaos" expect --in "$cdir/events-$k.pbs" --bad-fraction "$bad_fraction" \
            --out "$cdir/expect-$k.txt" >/dev/null || die "cms-chaos expect"
        "$bin_dir/cms-chaos" split --in "$cdir/events-$k.pbs" --out "$cdir/events-$k" \
            >"$cdir/split-$k.txt" || die "cms-chaos split"
        left=$((left - n))
        nchunks=$((nchunks + 1))
    done
    cat "$cdir"/expect-*.txt >"$cdir/expect.txt"
    n_valid=$(grep -c ' valid$' "$cdir/expect.txt" || true)
    n_poison=$(grep -vc ' valid$' "$cdir/expect.txt" || true)
}

# One chunk's share of one NATS user, until cmsctl replay says all of it
# was acked; cut short by a fault, it is sent again whole (the stream's
# dedupe window and the audit log's primary key absorb the repeats).
replay_part()
{
    local f=$1 user=$2 r=$3 tries=0
    [ -s "$f" ] || return 0
    until CMS_NATS_URL=$nats_url CMS_NATS_CREDS=$dir/nats-auth/creds/$user.creds \
        "$bin_dir/cmsctl" replay --rate "$r" --retries 5 --timeout 5s "$f" >>"$cdir/replay-$user.log" 2>&1; do
        tries=$((tries + 1))
        echo "replay: $f cut short (attempt $tries); again" >>"$cdir/replay-$user.log"
        [ "$tries" -lt 200 ] || return 1
        sleep 1 # not a synchronisation: the pace of re-trying a server that is away
    done
}

# The replay, in the background, chunk after chunk; each chunk's parts at
# once, each as the NATS user that may publish it (cms-chaos split), each at
# its share of rate (events per second overall).
replay_loop()
{
    local k u n r pids
    for ((k = 0; k < nchunks; k++)); do
        pids=()
        for u in identity contracts training publisher; do
            n=$(sed -n "s/^$u //p" "$cdir/split-$k.txt")
            r=$((rate * n / chunk + 1))
            replay_part "$cdir/events-$k.$u.pbs" "$u" "$r" &
            pids+=($!)
        done
        for n in "${pids[@]}"; do wait "$n" || exit 1; done
        echo "$k" >"$cdir/replayed"
    done
    echo "done" >"$cdir/replay.done"
}

start_streams()
{
    rate=$((events / chaos_plan_s))
    [ "$rate" -ge 200 ] || rate=200
    phase "streams: replaying $events events ($n_poison poison) at $rate/s; commands of every service"
    replay_loop &
    replay_pid=$!
    "$bin_dir/cms-chaos" load --nats-url "$nats_url" --nats-creds "$dir/nats-auth/creds/client.creds" \
        --admin-key-file "$dir/credentials" --record "$cdir/commands.tsv" --stop-file "$cdir/stop" \
        --run-id "chaos$base" --retry-until 240s >"$cdir/load.out" 2>"$cdir/load.log" &
    load_pid=$!
    # the faults hit a load under way: one of each kind acknowledged first
    wait_for "commands under way (a signed contract and a submitted job)" 180 load_under_way \
        || true
}

load_under_way()
{
    grep -q $'\tcontracts\tsign\t.*\tOK\t.*/consumer$' "$cdir/commands.tsv" \
        && grep -q $'\ttraining\tsubmit\t.*\tOK\t' "$cdir/commands.tsv"
}

audit_count()
{
    psql_q -c "SELECT count(*) FROM audit_logs" 2>/dev/null
}

jobs_open()
{
    [ "$(psql_q -c "SELECT count(*) FROM training_jobs WHERE status IN ('pending', 'running')")" = 0 ]
}

replay_done()
{
    [ -f "$cdir/replay.done" ]
}

load_done()
{
    ! kill -0 "$load_pid" 2>/dev/null
}

# Loads the expected events into the table chaos_expect, once.
load_expect()
{
    [ "${expect_loaded:-0}" = 0 ] || return 0
    awk '{print $1 "\t" $2 "\t" $3}' "$cdir/expect.txt" >"$cdir/expect.tsv"
    psql_q >/dev/null <<SQL
DROP TABLE IF EXISTS chaos_expect;
CREATE TABLE chaos_expect (sha TEXT, event_id TEXT, kind TEXT);
\copy chaos_expect FROM '$cdir/expect.tsv'
CREATE INDEX ON chaos_expect (event_id);
SQL
    expect_loaded=1
}

valid_recorded()
{
    load_expect
    [ "$(psql_q -c "SELECT count(*) FROM audit_logs a JOIN chaos_expect e
                    ON e.kind = 'valid' AND a.id::text = e.event_id")" -ge "$n_valid" ]
}

dlq_dump()
{
    "$bin_dir/cms-chaos" dlq --nats-url "$nats_url" --nats-creds "$dir/nats-auth/creds/migrator.creds" \
        --out "$cdir/dlq.txt" >/dev/null 2>>"$cdir/dlq.log"
}

dlq_complete()
{
    dlq_dump || return 1
    [ "$(cut -d' ' -f1 "$cdir/dlq.txt" | sort -u | wc -l)" -ge "$n_poison" ]
}

# Lets everything settle: the replay ends, the load stops (and repeats every
# command), the jobs end, the audit log and the dead letters fill.
drain()
{
    phase "drain: waiting for the replay to end"
    wait_for "replay of every chunk" 900 replay_done || true
    phase "drain: stopping the load (each command is then repeated)"
    touch "$cdir/stop"
    wait_for "command load ended" 600 load_done || true
    wait "$load_pid" 2>/dev/null
    load_rc=$?
    phase "drain: waiting for the jobs, the audit log and the dead letters"
    wait_for "all ready" 120 all_ready || true
    wait_for "every job ended" 600 jobs_open || true
    wait_for "every valid event in audit_logs" 600 valid_recorded || true
    wait_for "every poison event dead-lettered" 300 dlq_complete || true
    wait_for "the services' own events in audit_logs" 300 own_events_recorded || true
}

# --- the checks ------------------------------------------------------------------------------

q_zero()
{
    local n
    n=$(psql_q -c "$1") || return 1
    [ "$n" = 0 ] || { echo "$n rows: $1" | head -c 600; return 1; }
}

# The record of the commands as the table chaos_cmds.
load_commands()
{
    grep $'^C\t' "$cdir/commands.tsv" | cut -f2- >"$cdir/commands-c.tsv" || true
    psql_q >/dev/null <<SQL
DROP TABLE IF EXISTS chaos_cmds;
CREATE TABLE chaos_cmds (client TEXT, service TEXT, verb TEXT, rid TEXT, attempts INT,
                         outcome TEXT, result TEXT, key TEXT);
\copy chaos_cmds FROM '$cdir/commands-c.tsv'
SQL
}

load_kv()
{
    sed -n "s/^$1: //p" "$cdir/load.out"
}

check_commands_answered()
{
    local sent un
    sent=$(load_kv sent)
    un=$(load_kv unanswered)
    if [ -z "$sent" ] || [ "$sent" = 0 ]; then
        echo "no commands sent (load exit $load_rc)"
        return 1
    fi
    [ "$un" = 0 ] || { echo "$un of $sent unanswered"; grep -m5 UNANSWERED "$cdir/commands.tsv"; return 1; }
}

check_repeats()
{
    local rep diff
    rep=$(load_kv repeated)
    diff=$(load_kv repeat_differed)
    if [ -z "$rep" ] || [ "$rep" = 0 ]; then
        echo "nothing repeated (load exit $load_rc)"
        return 1
    fi
    [ "$diff" = 0 ] || { echo "$diff of $rep repeats differed:"; grep -m5 $'^R\t' "$cdir/commands.tsv"; return 1; }
}

# applied_once SERVICE VERB TABLE KEYCOL: every OK or IN_DOUBT command made
# exactly one row whose KEYCOL is its key (and an OK one the row it
# returned); every refused one none.
applied_once()
{
    q_zero "SELECT count(*) FROM chaos_cmds c
            WHERE c.service = '$1' AND c.verb = '$2' AND (
              (c.outcome IN ('OK', 'IN_DOUBT')
                 AND (SELECT count(*) FROM $3 t WHERE t.$4 = c.key) <> 1)
              OR (c.outcome = 'OK'
                 AND NOT EXISTS (SELECT FROM $3 t WHERE t.$4 = c.key AND t.id::text = c.result))
              OR (c.outcome NOT IN ('OK', 'IN_DOUBT', 'UNANSWERED')
                 AND EXISTS (SELECT FROM $3 t WHERE t.$4 = c.key)))"
}

check_credentials()
{
    q_zero "SELECT count(*) FROM chaos_cmds c
            WHERE c.service = 'identity' AND c.verb = 'issue_credential' AND (
              (c.outcome IN ('OK', 'IN_DOUBT') AND (SELECT count(*) FROM credentials t
                   WHERE t.identity_id::text = c.key AND t.type = 'api_key') <> 1)
              OR (c.outcome = 'OK' AND NOT EXISTS (SELECT FROM credentials t
                   WHERE t.id::text = c.result AND t.identity_id::text = c.key)))"
}

# An identity's status is what the last acknowledged set_status made it.
check_identity_status()
{
    q_zero "SELECT count(*) FROM (
              SELECT DISTINCT ON (split_part(key, '/', 1)) split_part(key, '/', 1) AS id,
                     split_part(key, '/', 2) AS status
              FROM chaos_cmds WHERE service = 'identity' AND verb = 'set_status'
                AND outcome IN ('OK', 'IN_DOUBT')
              ORDER BY split_part(key, '/', 1), regexp_replace(rid, '.*-', '')::bigint DESC) l
            JOIN identities i ON i.id::text = l.id
            WHERE i.status::text <> l.status"
}

check_signatures()
{
    q_zero "SELECT count(*) FROM chaos_cmds c
            WHERE c.service = 'contracts' AND c.verb = 'sign' AND c.outcome IN ('OK', 'IN_DOUBT')
              AND NOT EXISTS (SELECT FROM contracts k WHERE k.id::text = split_part(c.key, '/', 1)
                              AND k.signatures ? split_part(c.key, '/', 2))"
}

# Contracts: every status implies what its lifecycle requires, an
# acknowledged activation left it active (nothing here ends one), and the
# events of each, in order, follow the lifecycle.
check_contract_states()
{
    q_zero "SELECT count(*) FROM contracts WHERE status IN ('signed', 'active', 'completed', 'expired')
              AND NOT (coalesce(signatures, '{}') ? 'provider' AND coalesce(signatures, '{}') ? 'consumer')" \
        || return 1
    q_zero "SELECT count(*) FROM chaos_cmds c JOIN contracts k ON k.id::text = c.key
            WHERE c.service = 'contracts' AND c.verb = 'activate' AND c.outcome = 'OK'
              AND k.status <> 'active'" || return 1
    q_zero "WITH ev AS (
              SELECT resource_id, event_type,
                     lag(event_type) OVER (PARTITION BY resource_id ORDER BY created_at, id) AS prev
              FROM audit_logs WHERE resource_type = 'contract'
                AND resource_id IN (SELECT id FROM contracts))
            SELECT count(*) FROM ev WHERE (prev, event_type) NOT IN (
              (NULL, 'contract.created'),
              ('contract.created', 'contract.submitted'), ('contract.created', 'contract.terminated'),
              ('contract.created', 'contract.updated'), ('contract.updated', 'contract.updated'),
              ('contract.updated', 'contract.submitted'), ('contract.updated', 'contract.terminated'),
              ('contract.submitted', 'contract.signed'), ('contract.submitted', 'contract.terminated'),
              ('contract.signed', 'contract.signed'), ('contract.signed', 'contract.fully_signed'),
              ('contract.signed', 'contract.terminated'),
              ('contract.fully_signed', 'contract.activated'), ('contract.fully_signed', 'contract.expired'),
              ('contract.activated', 'contract.completed'), ('contract.activated', 'contract.terminated'),
              ('contract.activated', 'contract.expired'), ('contract.activated', 'contract.amended'),
              ('contract.amended', 'contract.amended'), ('contract.amended', 'contract.completed'),
              ('contract.amended', 'contract.terminated'), ('contract.amended', 'contract.expired'))
              AND NOT (prev IS NULL AND event_type = 'contract.created')"
}

# Jobs: all ended, each end consistent, its events in lifecycle order
# (submitted first, nothing after its end).
check_job_states()
{
    q_zero "SELECT count(*) FROM training_jobs WHERE status NOT IN ('completed', 'failed', 'stopped')" \
        || return 1
    q_zero "SELECT count(*) FROM training_jobs WHERE status = 'completed'
              AND (completed_at IS NULL OR (max_steps IS NOT NULL AND steps_done > max_steps))" || return 1
    q_zero "WITH ev AS (
              SELECT resource_id, event_type,
                     row_number() OVER w AS n,
                     bool_or(event_type IN ('training_job.completed', 'training_job.failed',
                                            'training_job.stopped'))
                       OVER (PARTITION BY resource_id ORDER BY created_at, id
                             ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS ended_before
              FROM audit_logs WHERE resource_type = 'training_job'
                AND resource_id IN (SELECT id FROM training_jobs)
              WINDOW w AS (PARTITION BY resource_id ORDER BY created_at, id))
            SELECT count(*) FROM ev
            WHERE (n = 1 AND event_type <> 'training_job.submitted') OR coalesce(ended_before, false)"
}

check_job_budgets()
{
    q_zero "SELECT count(*) FROM training_jobs
            WHERE privacy_budget_spent IS NULL OR privacy_budget_spent < 0
               OR privacy_budget_spent > privacy_budget"
}

# Every contract ledger: reserved and spent within the contract's
# max_epsilon, as cms-training reports it (composed from the curves).
check_ledgers()
{
    local c out bad=0 n=0
    for c in $(psql_q -c "SELECT contract_id FROM training_ledgers"); do
        n=$((n + 1))
        out=$(ctl contract budget "$c" -o json 2>&1) || { echo "budget $c: $out"; bad=1; continue; }
        if ! jq -e '(.max_epsilon // 0) == 0 or
                    ((.reserved_epsilon // 0) <= .max_epsilon * (1 + 1e-9)
                     and (.spent_epsilon // 0) <= .max_epsilon * (1 + 1e-9))' <<<"$out" >/dev/null; then
            echo "contract $c overspent: $out"
            bad=1
        fi
    done
    [ "$n" -gt 0 ] || { echo "no ledger to check"; return 1; }
    return "$bad"
}

check_valid_events()
{
    load_expect
    local got
    got=$(psql_q -c "SELECT count(*) FROM audit_logs a JOIN chaos_expect e
                     ON e.kind = 'valid' AND a.id::text = e.event_id")
    [ "$got" = "$n_valid" ] || { echo "$got of $n_valid valid events in audit_logs"; return 1; }
}

check_no_poison_recorded()
{
    load_expect
    q_zero "SELECT count(*) FROM audit_logs a JOIN chaos_expect e
            ON e.kind <> 'valid' AND a.id::text = e.event_id"
}

check_dead_letters()
{
    dlq_dump || { echo "cannot read CMS_DLQ (see $cdir/dlq.log)"; return 1; }
    # every poison record's bytes dead-lettered, with its kind as the reason
    local missing
    missing=$(awk 'NR == FNR { seen[$1 " " $2] = 1; next }
                   $3 != "valid" && !(($1 " " $3) in seen) { print }' \
        "$cdir/dlq.txt" "$cdir/expect.txt")
    [ -z "$missing" ] || {
        echo "$(wc -l <<<"$missing") of $n_poison poison events not dead-lettered with their reason:"
        head -n 5 <<<"$missing"
        return 1
    }
}

# The services' own events (outbox -> stream -> cms-audit) of what the load
# made: one created/submitted event per identity, contract and job.
own_events_recorded()
{
    q_zero "SELECT (SELECT count(*) FROM identities i WHERE NOT EXISTS (SELECT FROM audit_logs a
                      WHERE a.resource_id = i.id AND a.event_type = 'identity.created')
                      AND i.name LIKE 'chaos%')
                 + (SELECT count(*) FROM contracts k WHERE NOT EXISTS (SELECT FROM audit_logs a
                      WHERE a.resource_id = k.id AND a.event_type = 'contract.created'))
                 + (SELECT count(*) FROM training_jobs j WHERE NOT EXISTS (SELECT FROM audit_logs a
                      WHERE a.resource_id = j.id AND a.event_type = 'training_job.submitted'))"
}

check_audit_verify()
{
    PGPASSFILE=$dir/pgpass.d/cms_auditor_login CMS_NATS_URL=$nats_url CMS_CREDENTIALS_FILE=$dir/credentials \
        CMS_NATS_CREDS=$dir/nats-auth/creds/client.creds "$bin_dir/cmsctl" audit verify \
        --database-url "host=127.0.0.1 port=$base user=cms_auditor_login dbname=cms"
}

run_checks()
{
    phase "checks"
    load_commands
    check "all services ready and the worker running" all_ready
    check "events: every valid event exactly once in audit_logs" check_valid_events
    check "events: no poison event in audit_logs" check_no_poison_recorded
    check "events: every poison event in CMS_DLQ with its reason" check_dead_letters
    check "events: the services' own events in audit_logs" own_events_recorded
    check "commands: every command got a definite answer" check_commands_answered
    check "commands: a repeat of each (same request id) got the same outcome" check_repeats
    check "identities: every acknowledged create applied exactly once, no refused one" \
        applied_once identity create identities name
    check "credentials: every acknowledged issue applied exactly once" check_credentials
    check "identities: status is what the last acknowledged set_status made it" check_identity_status
    check "contracts: every acknowledged create applied exactly once, no refused one" \
        applied_once contracts create contracts title
    check "contracts: every acknowledged signature kept" check_signatures
    check "contracts: every state and transition one the lifecycle allows" check_contract_states
    check "jobs: every acknowledged submit applied exactly once, no refused one" \
        applied_once training submit training_jobs model_name
    check "jobs: every state and transition one the lifecycle allows" check_job_states
    check "jobs: privacy_budget_spent <= privacy_budget everywhere" check_job_budgets
    check "ledgers: no contract's ledger overspent" check_ledgers
    check "audit: cmsctl audit verify passes" check_audit_verify
}

# --- the run ----------------------------------------------------------------------------------

# Stops process $1 and all its descendants (the replay loop's subshells and
# their cmsctl), by pid.
kill_tree()
{
    local c
    for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do kill_tree "$c"; done
    kill "$1" 2>/dev/null
}

chaos_cleanup()
{
    local rc=$?
    trap - EXIT INT TERM
    set +e
    [ -z "${load_pid:-}" ] || kill "$load_pid" 2>/dev/null
    [ -z "${replay_pid:-}" ] || kill_tree "$replay_pid"
    # a paused process would never stop
    local f p
    for f in "${dir:-/nonexistent}"/run/cms-*.pid; do
        [ -f "$f" ] || continue
        p=$(pid_of "$(basename "$f" .pid)") && kill -CONT "$p" 2>/dev/null
    done
    if [ -n "${dir:-}" ] && [ -d "$dir" ]; then
        phase "stopping the stack"
        stack_down
        if [ "$keep" = 1 ]; then
            echo "kept $dir"
        elif [ "$n_failed" -gt 0 ]; then
            # the evidence of a failure is kept (its stack stopped)
            echo "the run's record and logs: $cdir"
        fi
    fi
    echo "$chaos_name: $((SECONDS - t_start))s"
    [ "${#failed_names[@]}" = 0 ] || printf 'failed: %s\n' "${failed_names[@]}"
    echo "$n_passed passed, $n_failed failed"
    [ "$n_failed" = 0 ] && [ "$rc" = 0 ] && exit 0
    exit 1
}

chaos_main()
{
    chaos_parse "$@"
    if [ -z "$bin_dir" ]; then
        bin_dir=$root/build/chaos/bin
        if [ ! -x "$bin_dir/cms-chaos" ]; then
            phase "building Release into build/chaos"
            if ! { cmake -S "$root" -B "$root/build/chaos" -DCMAKE_BUILD_TYPE=Release -DCMS_WERROR=ON \
                && cmake --build "$root/build/chaos" -j "$(nproc 2>/dev/null || echo 2)"; } >/dev/null; then
                echo "building build/chaos failed"
                echo "0 passed, 1 failed"
                exit 1
            fi
        fi
    fi
    local b
    for b in cms-identity cms-contracts cms-training cms-audit cms-worker cms-migrate cmsctl cms-chaos; do
        [ -x "$bin_dir/$b" ] || { echo "$bin_dir/$b is missing"; echo "0 passed, 1 failed"; exit 1; }
    done
    # As root the stack runs as user cms, which must reach the folder.
    dir=$(mktemp -d /tmp/cms-chaos.XXXXXX)
    chmod 755 "$dir"
    cdir=$dir/chaos
    mkdir -p "$cdir"
    trap chaos_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    base=$(pick_ports) || die "no free ports"
    stack_env
    phase "stack: starting it in $dir (ports $base-$((base + 6)))"
    stack_up || die "deploy/local/up failed: $(tail -n 8 "$cdir/up.log")"
    wait_for "stack ready" 120 all_ready || die "the stack did not get ready"
    phase "events: generating $events ($bad_fraction poison) in chunks of $chunk"
    make_events
    start_streams
    chaos_faults
    drain
    run_checks
}

# Between faults: the load has moved on (ten more commands acknowledged),
# so that each fault hits a system that recovered from the last.
ok_count()
{
    grep -c $'\tOK\t' "$cdir/commands.tsv" 2>/dev/null || true
}

ok_beyond()
{
    [ "$(ok_count)" -ge "$1" ]
}

settle()
{
    local want=$(($(ok_count) + 10))
    wait_for "the load moving on (10 more commands acknowledged)" 180 ok_beyond "$want" || true
}
