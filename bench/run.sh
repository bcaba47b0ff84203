#!/usr/bin/env bash
# paygw benchmark: starts its own stack under bench/run/ (Redis, MariaDB with
# the schema, the provider simulator, nginx with the module), runs wrk on
# loopback against paygw and against a plain proxy_pass baseline, prints a
# table and saves it to bench/results/<date>.txt, then stops everything it
# started.  Measurement only: no timing is asserted.  See bench/README.md.
#
#   bash bench/run.sh            (or: make bench)
#   BENCH_HA=1 bash bench/run.sh (or: make bench-ha) creates and GETs on
#                        single servers vs a Redis Cluster + Galera, back
#                        to back (bench/ha_bench.py; bench/README.md)
#   bash bench/run.sh --soak     (make bench-soak) a long mixed load while
#                                the nginx processes' RSS is sampled:
#                                bench/results/<date>-soak.txt (and .json:
#                                every sample)
#   bash bench/run.sh --profile  (make bench-profile) perf record -g on the
#                                nginx workers during a create and a GET
#                                run: bench/results/<date>-profile.txt
#
# Environment (all optional):
#   BENCH_DURATION (10)  seconds per measured wrk run
#   BENCH_THREADS  (2)   wrk threads
#   BENCH_CONNS    (64)  connections of the throughput runs
#   BENCH_LAT_CONNS (16) connections of the latency runs (0: skip them)
#   BENCH_WARMUP   (2)   seconds of warm-up per scenario (not reported)
#   BENCH_WORKERS  (2)   nginx worker_processes
#   BENCH_SEED     (1000) payments created for the GET scenario
#   BENCH_STATIC   (1)   also measure nginx `return 200` (a ceiling)
#   BENCH_ONLY           comma-separated scenarios to run (create, webhooks,
#                        create_alipay, get, baseline, static), for
#                        experiments; default: all
#   BENCH_MYCNF          lines appended to MariaDB's my.cnf ([mysqld]), and
#   BENCH_SQL            SQL run after sql/*.sql, for experiments (both
#                        named in the report, like BENCH_CONF_SED)
#   BENCH_PERF     (0)   1: system-wide `perf record` during each throughput
#                        run; summaries in bench/run/logs/perf-*.txt
#   BENCH_QUIET_WAIT (60) before each measured run, wait up to this many
#   BENCH_QUIET_MAX (25)  seconds until processes other than the stack use
#                        at most this % of one core (e.g. a concurrent
#                        make test); a run started anyway is noted
#   BENCH_WEBHOOKS (1)   also measure creates with a notify_url to a local
#                        webhook receiver, delivery off (then the backlog's
#                        drain rate) and on (nginx reloaded in between)
#   BENCH_HOOK_PAIRS (4) how many (delivery off, delivery on) pairs of
#                        create runs measure the cost of delivering, in the
#                        order off, on, on, off, ...: one pair moves by
#                        5-10 % with the box's drift and the tables' growth
#   BENCH_RECEIVER (nginx) the webhook receiver: "nginx" = a plain nginx
#                        answering 204 (costs next to nothing, like a remote
#                        merchant), "node" = t/sim/webhook_receiver.js (also
#                        checks signatures, costs ~130 us of CPU per event)
#   BENCH_CONF_SED       a sed script applied to the rendered nginx.conf, for
#                        experiments, e.g. 's/max_conns=8/max_conns=4/'
#                        (it is named in the report)
#   PAYGW_PORT, PAYGW_BASELINE_PORT, PAYGW_REDIS_PORT, PAYGW_MYSQL_PORT,
#   PAYGW_SIM_PORT, PAYGW_ACQUIRER_PORT
#                        ports; default: free ports picked at start, so the
#                        bench never collides with `make run` or the tests
#   PAYGW_MODULE         the module .so (default build/objs/...)
#   SOAK_SECONDS   (600) --soak: how long the mixed load runs
#   SOAK_CONNS     (16)  --soak: wrk connections
#   SOAK_MIX     (3:6:1) --soak: creates:GETs:refunds, by count
#   SOAK_INTERVAL  (2)   --soak: seconds between two memory samples
#   SOAK_MAX_GROWTH (1024) --soak: kB a process may grow after the warm-up
#   SOAK_MAX_SLOPE (64)  --soak: kB/min the floor may rise over the last 5 min
#   SOAK_IDLE_LONG (0)   --soak: seconds after the load for a second look at
#                        RSS, malloc in use and MySQL connections (past the
#                        pool's idle_timeout, e.g. 75); 0: none
#   SOAK_TRIM      (1)   --soak: malloc_trim(0) in each worker after the load (gdb)
#   SOAK_REST      (2)   --soak: seconds the load pauses after each segment
#                        for a rest sample (0: no pause)
#   PROFILE_TOP    (30)  --profile: symbols per scenario
#   BENCH_ACQUIRER (standin) the bank-card acquirer the creates reach:
#                        "standin" = bench/acquirer_standin.c (C, epoll,
#                        checks and signs like the real one; built here),
#                        "sim" = the Node simulator t/sim/sim.js (as before);
#                        Alipay/WeChat always go to the simulator
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"     # nginx, mariadbd

MODE=bench
for arg in "$@"; do
    case "$arg" in
        --soak) MODE=soak ;;
        --profile) MODE=profile ;;
        *) echo "usage: $0 [--soak | --profile]" >&2; exit 2 ;;
    esac
done

bench=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$bench/.." && pwd)
run="$bench/run"
logs="$run/logs"
module=${PAYGW_MODULE:-$repo/build/objs/ngx_http_paygw_module.so}

DURATION=${BENCH_DURATION:-10}
THREADS=${BENCH_THREADS:-2}
CONNS=${BENCH_CONNS:-64}
LAT_CONNS=${BENCH_LAT_CONNS:-16}
WARMUP=${BENCH_WARMUP:-2}
WORKERS=${BENCH_WORKERS:-2}
RECEIVER=${BENCH_RECEIVER:-nginx}
SEED=${BENCH_SEED:-1000}
STATIC=${BENCH_STATIC:-1}
PERF=${BENCH_PERF:-0}
QUIET_WAIT=${BENCH_QUIET_WAIT:-60}
QUIET_MAX=${BENCH_QUIET_MAX:-25}
WEBHOOKS=${BENCH_WEBHOOKS:-1}
HOOK_PAIRS=${BENCH_HOOK_PAIRS:-4}
ACQUIRER=${BENCH_ACQUIRER:-standin}
HA=${BENCH_HA:-0}
[ "$HA" = 1 ] || HA=0
ROUNDS=${BENCH_ROUNDS:-2}
# HA: quiet waits are shorter (eight measured runs; the order alternates)
[ "$HA" = 0 ] || QUIET_WAIT=${BENCH_QUIET_WAIT:-15}
case "$ACQUIRER" in standin|sim) ;; *) echo "bench: BENCH_ACQUIRER is standin or sim" >&2; exit 1 ;; esac

die() { echo "bench: $*" >&2; exit 1; }
say() { echo "bench: $*"; }

for tool in wrk python3 nginx redis-server mariadbd mariadb mariadb-install-db node cc; do
    command -v "$tool" > /dev/null || die "$tool is not installed (make deps; apt-get install wrk)"
done
[ -f "$module" ] || die "$module is missing: run 'make build' first"
[ "$MODE" != profile ] || command -v perf > /dev/null || die "perf is not installed (apt-get install linux-perf)"
[ "$MODE" != soak ] || [ "$WEBHOOKS" = 1 ] || die "--soak delivers webhooks: BENCH_WEBHOOKS must be 1"

# One bench at a time: the lock lives as long as this shell.
exec 9> "$bench/.lock"
flock -n 9 || die "another bench/run.sh is running"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

PORT=${PAYGW_PORT:-$(free_port)}
BASE_PORT=${PAYGW_BASELINE_PORT:-$(free_port)}
REDIS_PORT=${PAYGW_REDIS_PORT:-$(free_port)}
MYSQL_PORT=${PAYGW_MYSQL_PORT:-$(free_port)}
SIM_PORT=${PAYGW_SIM_PORT:-$(free_port)}
ACQ_PORT=${PAYGW_ACQUIRER_PORT:-$(free_port)}
for p in "$PORT" "$BASE_PORT" "$REDIS_PORT" "$MYSQL_PORT" "$SIM_PORT" "$ACQ_PORT"; do
    port_open "$p" && die "port $p is already in use"
done

# ---- what we started, and how to stop it ----------------------------------

# pid files under run/ name the processes this script started, so that a
# bench killed with SIGKILL can be cleaned up by the next one.
declare -A expect_name=([nginx]=nginx [sim]=node [mysql]=mariadbd [redis]=redis-server [driver]=python [receiver]=${BENCH_RECEIVER:-nginx} [acquirer]=acquirer_standin [nginx_ha]=nginx [ha]=ha_backends)

pid_alive() {   # pid_alive NAME: prints the pid if run/NAME.pid is ours and alive
    local f="$run/$1.pid" pid cmd
    [ -s "$f" ] || return 1
    pid=$(tr -dc '0-9' < "$f")
    [ -n "$pid" ] && kill -0 "$pid" 2> /dev/null || return 1
    cmd=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2> /dev/null) || return 1
    [[ "$cmd" == *"${expect_name[$1]}"* ]] || return 1
    echo "$pid"
}

stop_one() {    # stop_one NAME SECONDS
    local name=$1 secs=$2 pid kids i
    pid=$(pid_alive "$name") || { rm -f "$run/$name.pid"; return 0; }
    kids=$(ps -o pid= --ppid "$pid" 2> /dev/null | tr -d ' ' | tr '\n' ' ' || true)
    kill -TERM "$pid" 2> /dev/null || true
    for ((i = 0; i < secs * 10; i++)); do
        kill -0 "$pid" 2> /dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2> /dev/null; then
        say "$name (pid $pid) ignored TERM for ${secs}s; killing it"
        # shellcheck disable=SC2086
        kill -KILL "$pid" $kids 2> /dev/null || true
    fi
    # nginx workers exit after the master; make sure none is left behind
    for k in $kids; do
        for ((i = 0; i < 50; i++)); do kill -0 "$k" 2> /dev/null || break; sleep 0.1; done
        kill -KILL "$k" 2> /dev/null || true
    done
    wait "$pid" 2> /dev/null || true
    rm -f "$run/$name.pid"
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_one driver 15
    stop_one nginx 10
    stop_one nginx_ha 10
    stop_one ha 90
    stop_one sim 5
    stop_one acquirer 5
    stop_one receiver 5
    stop_one mysql 60
    stop_one redis 10
    # keep the logs and configuration for inspection; drop the bulk
    rm -rf "$run/mysql/data" "$run/mysql/tmp" "$run/redis" "$run/req" "$run/tmp" "$run/ha-tmp"
    exit "$rc"
}

# leftovers of a bench that was killed outright
if [ -d "$run" ]; then
    for c in driver nginx nginx_ha ha sim acquirer receiver mysql redis; do stop_one "$c" 30; done
fi
rm -rf "$run"
mkdir -p "$logs" "$run/tmp" "$run/req" "$run/redis" "$run/mysql/data" "$run/mysql/tmp" "$bench/results"
# a worker that crashes leaves its core here (nginx's working_directory)
rm -rf "$run/cores" && mkdir -m 1777 "$run/cores"

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

started=$(date +%s)

wait_port() {   # wait_port NAME PORT LOG
    local i
    for ((i = 0; i < 300; i++)); do
        port_open "$2" && return 0
        pid_alive "$1" > /dev/null || { [ "$i" -lt 20 ] || break; }
        sleep 0.1
    done
    echo "bench: $1 did not come up on 127.0.0.1:$2; tail of $3:" >&2
    tail -n 30 "$3" >&2 || true
    exit 1
}

# ---- Redis -------------------------------------------------------------------
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --daemonize no --dir "$run/redis" --logfile "$logs/redis.log" \
    < /dev/null > /dev/null 2>&1 &
echo $! > "$run/redis.pid"
wait_port redis "$REDIS_PORT" "$logs/redis.log"
say "redis up on 127.0.0.1:$REDIS_PORT"

# ---- BENCH_HA=1: the clusters, started meanwhile (bench/ha_backends.pl) -----
if [ "$HA" = 1 ]; then
    WEBHOOKS=0
    # their data directories under run/ (the harness's default is $TMPDIR)
    mkdir -p -m 755 "$run/ha-tmp"
    TMPDIR="$run/ha-tmp" perl "$bench/ha_backends.pl" "$run/ha.json" \
        < /dev/null > "$logs/ha-backends.log" 2>&1 &
    echo $! > "$run/ha.pid"
fi

# ---- MariaDB (as make run: scripts/mysql.cnf.in + scripts/mysql-sized.cnf) ---
mycnf="$run/mysql/my.cnf"
sed -e "s|@DATADIR@|$run/mysql/data|" \
    -e "s|@PORT@|$MYSQL_PORT|g" \
    -e "s|@SOCKET@|$run/mysql.sock|g" \
    -e "s|@PIDFILE@|$run/mysql/mariadbd.pid|" \
    -e "s|@LOGERR@|$logs/mysql.err|" \
    -e "s|@TMPDIR@|$run/mysql/tmp|" \
    "$repo/scripts/mysql.cnf.in" > "$mycnf"
cat "$repo/scripts/mysql-sized.cnf" >> "$mycnf"
if [ -n "${BENCH_MYCNF:-}" ]; then
    printf '%s\n' "$BENCH_MYCNF" >> "$mycnf"
    say "my.cnf [mysqld] extended by BENCH_MYCNF='$BENCH_MYCNF'"
fi
mariadb-install-db --defaults-file="$mycnf" \
    --auth-root-authentication-method=normal --skip-test-db \
    > "$logs/mysql-install.log" 2>&1 || {
    tail -n 30 "$logs/mysql-install.log" >&2
    die "mariadb-install-db failed"
}
mariadbd --defaults-file="$mycnf" < /dev/null >> "$logs/mysql.out" 2>&1 &
echo $! > "$run/mysql.pid"
for ((i = 0; i < 600; i++)); do
    mariadb-admin --defaults-file="$mycnf" ping > /dev/null 2>&1 && break
    pid_alive mysql > /dev/null || break
    sleep 0.1
done
mariadb-admin --defaults-file="$mycnf" ping > /dev/null 2>&1 || {
    tail -n 30 "$logs/mysql.err" >&2 || true
    die "mariadb did not come up"
}
(umask 077; head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24 > "$run/mysql.pass")
pw=$(cat "$run/mysql.pass")
mariadb --defaults-file="$mycnf" <<SQL || die "creating database/user paygw failed"
CREATE DATABASE IF NOT EXISTS paygw CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS 'paygw'@'127.0.0.1' IDENTIFIED BY '$pw';
GRANT ALL PRIVILEGES ON paygw.* TO 'paygw'@'127.0.0.1';
SQL
for f in "$repo"/sql/*.sql; do
    mariadb --defaults-file="$mycnf" paygw < "$f" || die "applying $f failed"
done
if [ -n "${BENCH_SQL:-}" ]; then
    mariadb --defaults-file="$mycnf" paygw -e "$BENCH_SQL" \
        || die "BENCH_SQL failed"
    say "schema changed by BENCH_SQL='$BENCH_SQL'"
fi
say "mariadb up on 127.0.0.1:$MYSQL_PORT (schema: $(cd "$repo" && ls sql/*.sql | tr '\n' ' '))"

# ---- provider simulator -------------------------------------------------------
# Its per-request log line goes to /dev/null (under load it would be a log of
# millions of lines); it is still written (console.log), so the cost stays.
bash "$repo/scripts/provider-keys.sh" "$run/keys" || die "provider keys"
node "$repo/t/sim/sim.js" --port "$SIM_PORT" --keys "$run/keys" \
    < /dev/null > /dev/null 2>> "$logs/sim.err" &
echo $! > "$run/sim.pid"
wait_port sim "$SIM_PORT" "$logs/sim.err"
say "simulator up on 127.0.0.1:$SIM_PORT"

# ---- the bank-card acquirer's stand-in (bench only, never shipped) ----------
# A remote acquirer costs the gateway's host nothing; the Node simulator
# costs ~185 us of CPU per charge on it.  The stand-in checks the request's
# signature and signs each answer (per request: the body names the order)
# like the real acquirer, in a fraction of that; its CPU is reported on
# its own line.
BANK_ADDR="127.0.0.1:$SIM_PORT"
if [ "$ACQUIRER" = standin ]; then
    cc -O2 -o "$run/acquirer_standin" "$bench/acquirer_standin.c" \
        -ljansson -lcrypto 2> "$logs/acquirer-build.log" \
        || { cat "$logs/acquirer-build.log" >&2; die "building bench/acquirer_standin.c failed"; }
    "$run/acquirer_standin" "$ACQ_PORT" "$repo/conf/demo/acquirer.secret" ACQ-M100 \
        < /dev/null > /dev/null 2>> "$logs/acquirer.err" &
    echo $! > "$run/acquirer.pid"
    wait_port acquirer "$ACQ_PORT" "$logs/acquirer.err"
    BANK_ADDR="127.0.0.1:$ACQ_PORT"
    say "acquirer stand-in up on $BANK_ADDR (bank_card; alipay/wechat: simulator)"
fi

# ---- a merchant's webhook receiver ------------------------------------------
# BENCH_RECEIVER=nginx (default): a second, plain nginx answering 204, so the
# merchant's end costs this box what a remote merchant costs the gateway:
# next to nothing (the Node receiver took ~130 us of CPU per event here, as
# much as the gateway's own delivery work).  =node: t/sim/webhook_receiver.js,
# which also checks every signature (the tests use it for that).
HOOK_PORT=0
if [ "$WEBHOOKS" = 1 ]; then
    HOOK_PORT=$(free_port)
    if [ "$RECEIVER" = node ]; then
        node "$repo/t/sim/webhook_receiver.js" --port "$HOOK_PORT" \
            --secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw \
            < /dev/null > /dev/null 2>> "$logs/receiver.err" &
        echo $! > "$run/receiver.pid"
    else
        mkdir -p "$run/receiver"
        cat > "$run/receiver/nginx.conf" <<CONF
worker_processes 1;
pid $run/receiver/nginx.pid;
error_log $logs/receiver.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$HOOK_PORT backlog=4096;
        location / { return 204; }
        location = /nginx_status { stub_status; }
    }
}
CONF
        nginx -p "$run/receiver/" -c "$run/receiver/nginx.conf" \
            -e "$logs/receiver.err" -g 'daemon off;' \
            < /dev/null >> "$logs/receiver.err" 2>&1 &
        echo $! > "$run/receiver.pid"
    fi
    wait_port receiver "$HOOK_PORT" "$logs/receiver.err"
    say "webhook receiver ($RECEIVER) up on 127.0.0.1:$HOOK_PORT"
fi

# ---- nginx: nginx.conf.example, rendered like scripts/stack.sh does, with ----
# error_log at warn, access_log off, worker_processes $WORKERS, the per-key
# limit_req rate raised out of the way (all the bench's requests use one
# key, and cached GETs pass the example's 20,000 r/s), and one more server
# (the baseline) on its own port.
sim_url="http://127.0.0.1:$SIM_PORT"
sed -e "s|@PAYGW_PORT@|$PORT|g" \
    -e "s|@REDIS_PORT@|$REDIS_PORT|g" \
    -e "s|@MYSQL_PORT@|$MYSQL_PORT|g" \
    -e "s|@MYSQL_PASSWORD_FILE@|$run/mysql.pass|g" \
    -e "s|@SIM_PORT@|$SIM_PORT|g" \
    -e "s|@ALIPAY_URL@|$sim_url|g" \
    -e "s|@WECHAT_URL@|$sim_url|g" \
    -e "s|@BANK_URL@|http://$BANK_ADDR|g" \
    -e "s|@WEBHOOK_RETRY@|5s 5m 30m 2h 5h 10h 24h|g" \
    -e "s|@BANK_SERVER@|$BANK_ADDR|g" \
    -e "s|@ALIPAY_SERVER@|127.0.0.1:$SIM_PORT|g" \
    -e "s|@WECHAT_SERVER@|127.0.0.1:$SIM_PORT|g" \
    -e "s|@WECHAT_MERCHANT_SERIAL@|$(head -n1 "$run/keys/wechat_merchant_serial")|g" \
    -e "s|@WECHAT_PLATFORM1_SERIAL@|$(head -n1 "$run/keys/wechat_platform1_serial")|g" \
    -e "s|@WECHAT_PLATFORM2_SERIAL@|$(head -n1 "$run/keys/wechat_platform2_serial")|g" \
    -e "s|@MODULE_PATH@|$module|g" \
    -e "s|@RUN_DIR@|$run|g" \
    -e "s|@REPO@|$repo|g" \
    -e "s|^\(\s*worker_processes\s\+\)[^;]*;|\1$WORKERS; worker_rlimit_core 2g; working_directory $run/cores;|" \
    -e "s|^\(\s*error_log\s\+[^ ;]\+\)\(\s\+[a-z]\+\)\?\s*;|\1 warn;|" \
    -e "s|^\(\s*access_log\s\+\)[^;]*;|\1off;|" \
    -e "s|\(zone=paygw_per_key:[0-9a-z]* rate=\)[0-9]*r/s|\11000000r/s|" \
    "$repo/nginx.conf.example" > "$run/nginx.conf.tmp"
if [ -n "${BENCH_CONF_SED:-}" ]; then
    sed -i -e "$BENCH_CONF_SED" "$run/nginx.conf.tmp" || die "BENCH_CONF_SED failed"
    say "nginx.conf changed by BENCH_CONF_SED='$BENCH_CONF_SED'"
fi
left=$(grep -o '@[A-Z_]*@' "$run/nginx.conf.tmp" | sort -u | tr '\n' ' ' || true)
[ -z "$left" ] || die "nginx.conf.example has placeholders this script does not know: $left"
grep -q '^\s*access_log\s\+off;' "$run/nginx.conf.tmp" \
    || die "could not turn access_log off in the rendered nginx.conf.example"
grep -q '^\s*error_log\s.*warn;' "$run/nginx.conf.tmp" \
    || die "could not set error_log to warn in the rendered nginx.conf.example"
# the baseline server goes in before the http block's closing brace, the
# last line that is exactly "}"
last=$(grep -n '^}\s*$' "$run/nginx.conf.tmp" | tail -n 1 | cut -d: -f1)
[ -n "$last" ] || die "cannot find the end of the http block in nginx.conf.example"
{
    head -n $((last - 1)) "$run/nginx.conf.tmp"
    cat <<CONF

    # ---- added by bench/run.sh: the baseline ----
    # Plain proxy_pass with upstream keepalive to the simulator's cheapest
    # endpoint (GET /health: no signature, no body, no state), in the same
    # workers as paygw; keepalive like paygw_acquirer's.
    upstream bench_sim {
        server     127.0.0.1:$SIM_PORT;
        keepalive  32;
    }

    server {
        listen  127.0.0.1:$BASE_PORT;

        location = /health {
            proxy_pass          http://bench_sim;
            proxy_http_version  1.1;
            proxy_set_header    Connection "";
        }

        # request counter for the driver (per-request CPU and backend work)
        location = /nginx_status {
            stub_status;
        }

        # nginx alone, no upstream: the ceiling of this machine + wrk
        location = /static {
            default_type  application/json;
            return        200 '{"status":"ok"}';
        }
    }
CONF
    tail -n +"$last" "$run/nginx.conf.tmp"
} > "$run/nginx.conf"
rm -f "$run/nginx.conf.tmp"
# the same with webhook delivery off (for the webhook scenarios)
cp "$run/nginx.conf" "$run/nginx.conf.hooks-on"
sed -e '/^\s*paygw_webhook\s/,/;/s/^/#/' "$run/nginx.conf" > "$run/nginx.conf.hooks-off"

nginx -t -q -p "$run/" -c "$run/nginx.conf" -e "$logs/error.log" \
    || die "nginx -t failed on bench/run/nginx.conf"
nginx -p "$run/" -c "$run/nginx.conf" -e "$logs/error.log" -g 'daemon off;' \
    < /dev/null >> "$logs/nginx.out" 2>&1 &
nginx_pid=$!
# nginx itself writes the same pid (the master's) there: the pid directive
echo "$nginx_pid" > "$run/nginx.pid"
wait_port nginx "$PORT" "$logs/error.log"
wait_port nginx "$BASE_PORT" "$logs/error.log"
for ((i = 0; i < 50; i++)); do
    curl -fsS "http://127.0.0.1:$PORT/readyz" > /dev/null 2>&1 && break
    sleep 0.2
done
curl -fsS "http://127.0.0.1:$PORT/readyz" > /dev/null || die "paygw /readyz is not 200: $(curl -sS "http://127.0.0.1:$PORT/readyz")"
say "nginx up: paygw on 127.0.0.1:$PORT, baseline on 127.0.0.1:$BASE_PORT (workers $WORKERS)"

# ---- BENCH_HA=1: a second nginx, the same configuration on the clusters -------
# as scripts/stack.sh's PAYGW_HA=1: every Redis node a seed,
# paygw_redis_cluster on, paygw_redis_timeout 3s, writes to the first
# Galera node with the other two as failover=
if [ "$HA" = 1 ]; then
    for ((i = 0; i < 1800; i++)); do
        [ -s "$run/ha.json" ] && break
        pid_alive ha > /dev/null || break
        sleep 0.1
    done
    [ -s "$run/ha.json" ] || { tail -n 30 "$logs/ha-backends.log" >&2; die "the clusters did not come up"; }
    ha() { python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); v = d[sys.argv[2]]; print(" ".join(map(str, v)) if isinstance(v, list) else v)' "$run/ha.json" "$1"; }
    read -r -a ha_redis <<< "$(ha redis_ports)"
    read -r -a ha_mysql <<< "$(ha mysql_ports)"
    HA_PORT=${PAYGW_HA_PORT:-$(free_port)}
    HA_BASE_PORT=${PAYGW_HA_BASELINE_PORT:-$(free_port)}
    seeds=""
    for p in "${ha_redis[@]}"; do seeds="$seeds        server     127.0.0.1:$p;\n"; done
    mkdir -p "$run/ha/logs" "$run/ha/tmp"
    sed -e "s|$run/nginx.pid|$run/ha/nginx.pid|" \
        -e "s|$run/logs/|$run/ha/logs/|g" \
        -e "s|$run/tmp/|$run/ha/tmp/|g" \
        -e "s|127\.0\.0\.1:$PORT\([^0-9]\)|127.0.0.1:$HA_PORT\1|g" \
        -e "s|127\.0\.0\.1:$BASE_PORT\([^0-9]\)|127.0.0.1:$HA_BASE_PORT\1|g" \
        -e "s|^ *server  *127\.0\.0\.1:$REDIS_PORT;|$seeds|" \
        -e "s|port=$MYSQL_PORT |port=${ha_mysql[0]} failover=127.0.0.1:${ha_mysql[1]} failover=127.0.0.1:${ha_mysql[2]} |" \
        -e "s|password_file=$run/mysql.pass|password_file=$(ha password_file)|" \
        -e 's|^\( *\)paygw_redis_pass  *paygw_redis;|&\n\1paygw_redis_cluster  on;|' \
        -e 's|^\( *paygw_redis_timeout  *\)1s;|\13s;|' \
        "$run/nginx.conf" > "$run/nginx-ha.conf"
    grep -q 'paygw_redis_cluster  on;' "$run/nginx-ha.conf" || die "could not turn paygw_redis_cluster on in nginx-ha.conf"
    grep -q "failover=127.0.0.1:${ha_mysql[2]}" "$run/nginx-ha.conf" || die "could not add failover= to nginx-ha.conf"
    [ "$(grep -c 'server     127.0.0.1:' "$run/nginx-ha.conf")" -ge 6 ] || die "could not list the Redis seeds in nginx-ha.conf"
    nginx -t -q -p "$run/ha/" -c "$run/nginx-ha.conf" -e "$run/ha/logs/error.log" \
        || die "nginx -t failed on bench/run/nginx-ha.conf"
    nginx -p "$run/ha/" -c "$run/nginx-ha.conf" -e "$run/ha/logs/error.log" -g 'daemon off;' \
        < /dev/null >> "$logs/nginx-ha.out" 2>&1 &
    nginx_ha_pid=$!
    echo "$nginx_ha_pid" > "$run/nginx_ha.pid"
    wait_port nginx_ha "$HA_PORT" "$run/ha/logs/error.log"
    wait_port nginx_ha "$HA_BASE_PORT" "$run/ha/logs/error.log"
    for ((i = 0; i < 50; i++)); do
        curl -fsS "http://127.0.0.1:$HA_PORT/readyz" > /dev/null 2>&1 && break
        sleep 0.2
    done
    curl -fsS "http://127.0.0.1:$HA_PORT/readyz" > /dev/null || die "paygw (ha) /readyz is not 200: $(curl -sS "http://127.0.0.1:$HA_PORT/readyz")"
    say "nginx (ha) up: paygw on 127.0.0.1:$HA_PORT on Redis Cluster ${ha_redis[*]} and Galera ${ha_mysql[*]}"
fi

# ---- the measurements ---------------------------------------------------------
stamp=$(date -u +%Y-%m-%dT%H%MZ)
out="$bench/results/$stamp.txt"
[ "$HA" = 0 ] || out="$bench/results/$stamp-ha.txt"
[ "$MODE" = bench ] || out="$bench/results/$stamp-$MODE.txt"
rev=$(cd "$repo" && git rev-parse --short HEAD 2> /dev/null || echo '?')
dirty=$(cd "$repo" && git status --porcelain -- ngx_http_paygw_module.c src config 2> /dev/null | grep -q . && echo '+uncommitted C changes' || true)
built=$(date -u -r "$module" +%Y-%m-%dT%H:%MZ)
case "$MODE" in
    bench) wrkline="wrk -t$THREADS -d${DURATION}s (after ${WARMUP}s warm-up), throughput at -c$CONNS$([ "$LAT_CONNS" = 0 ] || echo ", latency at -c$LAT_CONNS")" ;;
    profile) wrkline="wrk -t$THREADS -d${DURATION}s (after ${WARMUP}s warm-up) at -c$CONNS" ;;
    soak) wrkline="wrk -t$THREADS -c${SOAK_CONNS:-16} for ${SOAK_SECONDS:-600}s" ;;
esac
header="paygw $([ "$MODE" = bench ] && echo bench || echo "bench --$MODE") $stamp  rev $rev$dirty (module built $built)  $(nginx -v 2>&1 | sed 's/.*: //')  workers=$WORKERS  $(nproc) cores
bank_card acquirer: $([ "$ACQUIRER" = standin ] && echo "C stand-in (bench/acquirer_standin.c)" || echo "Node simulator")
$wrkline; error_log warn, access_log off
load average at start: $(cut -d' ' -f1-3 /proc/loadavg)${BENCH_CONF_SED:+
nginx.conf changed by BENCH_CONF_SED='$BENCH_CONF_SED'}${BENCH_MYCNF:+
my.cnf extended by BENCH_MYCNF='$BENCH_MYCNF'}${BENCH_SQL:+
schema changed by BENCH_SQL='$BENCH_SQL'}"

if [ "$HA" = 1 ]; then
    python3 - "$run/ha.json" > "$run/stacks.json" <<PY
import json, sys
ha = json.load(open(sys.argv[1]))
print(json.dumps({
    "single": {"port": $PORT, "baseline_port": $BASE_PORT, "nginx_pid": $nginx_pid,
               "redis_ports": [$REDIS_PORT], "redis_pids": [$(cat "$run/redis.pid")],
               "mysql_defaults": ["$mycnf"], "mysql_pids": [$(cat "$run/mysql.pid")]},
    "ha": {"port": $HA_PORT, "baseline_port": $HA_BASE_PORT, "nginx_pid": $nginx_ha_pid,
           "redis_ports": ha["redis_ports"], "redis_pids": ha["redis_pids"],
           "mysql_defaults": ha["mysql_defaults"], "mysql_pids": ha["mysql_pids"]},
    "shared": {"sim(node)": $(cat "$run/sim.pid"),
               "acquirer": $(cat "$run/acquirer.pid" 2> /dev/null || echo 0)}}))
PY
    header="paygw bench-ha $stamp  rev $rev$dirty (module built $built)  $(nginx -v 2>&1 | sed 's/.*: //')  workers=$WORKERS  $(nproc) cores
single: one Redis, one MariaDB; ha: Redis Cluster 3 masters + 3 replicas (paygw_redis_cluster on, 6 seeds), Galera 3 nodes (writes to one, failover= the others)
bank_card acquirer: $([ "$ACQUIRER" = standin ] && echo "C stand-in (bench/acquirer_standin.c)" || echo "Node simulator"); both stacks' backends run during every run
wrk -t$THREADS -c$CONNS -d${DURATION}s (after ${WARMUP}s warm-up), $ROUNDS rounds alternating the order; error_log warn, access_log off
load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    python3 "$bench/ha_bench.py" --stacks "$run/stacks.json" \
        --lua "$bench/paygw.lua" --req-dir "$run/req" --log-dir "$logs" \
        --threads "$THREADS" --conns "$CONNS" --duration "$DURATION" \
        --warmup "$WARMUP" --seed "$SEED" --rounds "$ROUNDS" \
        --quiet-wait "$QUIET_WAIT" --quiet-max "$QUIET_MAX" \
        --header "$header" --out "$out" &
else
driver=("$bench/paygw_bench.py")
case "$MODE" in
    soak) driver=("$bench/paygw_soak.py" --soak-seconds "${SOAK_SECONDS:-600}"
                  --soak-conns "${SOAK_CONNS:-16}" --soak-mix "${SOAK_MIX:-3:6:1}"
                  --soak-interval "${SOAK_INTERVAL:-2}"
                  --soak-max-growth "${SOAK_MAX_GROWTH:-1024}"
                  --soak-max-slope "${SOAK_MAX_SLOPE:-64}"
                  --soak-idle-long "${SOAK_IDLE_LONG:-0}"
                  --soak-trim "${SOAK_TRIM:-1}"
                  --soak-rest "${SOAK_REST:-2}") ;;
    profile) driver=("$bench/paygw_profile.py" --top "${PROFILE_TOP:-30}") ;;
esac
python3 "${driver[@]}" \
    --port "$PORT" --baseline-port "$BASE_PORT" --redis-port "$REDIS_PORT" \
    --mysql-defaults "$mycnf" --nginx-pid "$nginx_pid" \
    --mysql-pid "$(cat "$run/mysql.pid")" --redis-pid "$(cat "$run/redis.pid")" \
    --sim-pid "$(cat "$run/sim.pid")" --lua "$bench/paygw.lua" \
    --acquirer-pid "$(cat "$run/acquirer.pid" 2> /dev/null || echo 0)" \
    --req-dir "$run/req" --log-dir "$logs" --threads "$THREADS" \
    --conns "$CONNS" --lat-conns "$LAT_CONNS" --duration "$DURATION" \
    --warmup "$WARMUP" --seed "$SEED" --static "$STATIC" --only "${BENCH_ONLY:-}" --perf "$PERF" \
    --quiet-wait "$QUIET_WAIT" --quiet-max "$QUIET_MAX" \
    --webhook-port "$HOOK_PORT" --hook-pairs "$HOOK_PAIRS" \
    --nginx-conf "$run/nginx.conf" \
    --header "$header" --out "$out" &
fi
echo $! > "$run/driver.pid"
wait "$(cat "$run/driver.pid")" || die "the benchmark driver failed"
rm -f "$run/driver.pid"

# anything nginx logged at warn or above during the runs
{
for elog in "$logs/error.log" ${nginx_ha_pid:+"$run/ha/logs/error.log"}; do
    nwarn=$(grep -c '\[\(warn\|error\|crit\|alert\|emerg\)\]' "$elog" || true)
    echo "nginx ${elog#"$run"/} lines at warn or above: $nwarn"
    grep '\[\(warn\|error\|crit\|alert\|emerg\)\]' "$elog" \
        | sed -e 's/^[0-9\/]* [0-9:]* //' -e 's/, client: .*//' \
        | sort | uniq -c | sort -rn | head -n 5 | sed 's/^/  /' || true
done
    ncores=$(find "$run/cores" -name 'core*' -type f | wc -l)
    [ "$ncores" = 0 ] || echo "worker core dumps: $ncores in $run/cores (gdb $(command -v nginx) <core>)"
    echo "wall time: $(( $(date +%s) - started ))s (stack start to report)"
} | tee -a "$out"
say "saved $out"
