#!/usr/bin/env bash
# The local paygw stack on loopback: Redis, MariaDB (schema applied), the
# provider simulator and nginx with the module (nginx.conf.example).
#
#   scripts/stack.sh start    start what is not running yet (idempotent)
#   scripts/stack.sh stop     stop exactly what start started (pid files)
#   scripts/stack.sh status
#
# State, pid files and logs live under run/. Ports come from the environment:
#   PAYGW_PORT (8080)  PAYGW_REDIS_PORT (6390)  PAYGW_MYSQL_PORT (3316)
#   PAYGW_SIM_PORT (8091)
#   PAYGW_ALIPAY_URL, PAYGW_WECHAT_URL, PAYGW_BANK_URL (the simulator)
# Another nginx: PAYGW_NGINX (the binary; default: nginx in PATH) and
# PAYGW_MODULE (the module built for it; default build/objs/...).
#   PAYGW_WEBHOOK_RETRY ("5s 5m 30m 2h 5h 10h 24h")
# PAYGW_HA=1: clustered backends (SPEC §1): a Redis Cluster of 3 masters
# and 3 replicas on PAYGW_REDIS_PORT..+5 (run/redis-<port>.pid, cluster bus
# on port+10000) and a 3-node MariaDB Galera cluster on PAYGW_MYSQL_PORT..+2
# (run/mysql-<port>.pid; group communication on PAYGW_GALERA_PORT..+2,
# default 4567, IST on +10, SST (mariabackup) on +20).  start brings back any
# node that is not running; stop stops them all.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"     # nginx, mariadbd

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
run="$repo/run"
logs="$run/logs"

PAYGW_PORT=${PAYGW_PORT:-8080}
PAYGW_REDIS_PORT=${PAYGW_REDIS_PORT:-6390}
PAYGW_MYSQL_PORT=${PAYGW_MYSQL_PORT:-3316}
PAYGW_SIM_PORT=${PAYGW_SIM_PORT:-8091}
PAYGW_GALERA_PORT=${PAYGW_GALERA_PORT:-4567}
PAYGW_HA=${PAYGW_HA:-0}
[ "$PAYGW_HA" = 1 ] || PAYGW_HA=0
sim_url="http://127.0.0.1:$PAYGW_SIM_PORT"
PAYGW_ALIPAY_URL=${PAYGW_ALIPAY_URL:-$sim_url}
PAYGW_WECHAT_URL=${PAYGW_WECHAT_URL:-$sim_url}
PAYGW_BANK_URL=${PAYGW_BANK_URL:-$sim_url}
# the webhook retry schedule: space-separated nginx times
PAYGW_WEBHOOK_RETRY=${PAYGW_WEBHOOK_RETRY:-5s 5m 30m 2h 5h 10h 24h}

nginx_bin=${PAYGW_NGINX:-nginx}
module=${PAYGW_MODULE:-$repo/build/objs/ngx_http_paygw_module.so}
mycnf="$run/mysql/my.cnf"
mypass="$run/mysql.pass"
wait_secs=30

die() { echo "stack: $*" >&2; exit 1; }
say() { echo "stack: $*"; }

# The process name each pid file must point at: a stale pid file whose pid
# was reused by something else is never signalled.
proc_name() {
    case "$1" in
        nginx)  echo nginx ;;
        redis*) echo redis-server ;;
        mysql*) echo mariadbd ;;
        sim)    echo node ;;
    esac
}

# Prints the pid of component $1 if it is running, else fails.
pid_of() {
    local f="$run/$1.pid" pid cmd
    [ -s "$f" ] || return 1
    pid=$(tr -dc '0-9' < "$f")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    cmd=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ "$cmd" == *"$(proc_name "$1")"* ]] || return 1
    echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# http://host:port/path -> host:port, for an nginx upstream's server line
url_server() {
    local hp=${1#*://}
    hp=${hp%%/*}
    case "$hp" in *:*) ;; *) case "$1" in https:*) hp="$hp:443" ;; *) hp="$hp:80" ;; esac ;; esac
    printf '%s' "$hp"
}

# wait_ready NAME PORT LOG: poll until PORT accepts, bounded; on failure show
# the log tail. Fails early if the component's process is gone.
wait_ready() {
    local name=$1 port=$2 log=$3 i
    for ((i = 0; i < wait_secs * 10; i++)); do
        if port_open "$port"; then return 0; fi
        if [ "$i" -gt 20 ] && ! pid_of "$name" >/dev/null; then
            break
        fi
        sleep 0.1
    done
    echo "stack: $name did not come up on 127.0.0.1:$port within ${wait_secs}s;" \
         "tail of $log:" >&2
    tail -n 30 "$log" >&2 2>/dev/null || true
    exit 1
}

fail_if_port_taken() {
    if port_open "$2"; then
        die "$1: port $2 is already in use by another process" \
            "(set ${3} to choose another)"
    fi
}

start_redis() {
    local pid
    if pid=$(pid_of redis); then say "redis already running (pid $pid)"; return; fi
    fail_if_port_taken redis "$PAYGW_REDIS_PORT" PAYGW_REDIS_PORT
    mkdir -p "$run/redis"
    redis-server --bind 127.0.0.1 --port "$PAYGW_REDIS_PORT" \
        --save "" --appendonly no --daemonize yes \
        --pidfile "$run/redis.pid" --logfile "$logs/redis.log" \
        --dir "$run/redis" \
        || die "redis-server failed to start; see $logs/redis.log"
    wait_ready redis "$PAYGW_REDIS_PORT" "$logs/redis.log"
    say "redis up on 127.0.0.1:$PAYGW_REDIS_PORT (pid $(pid_of redis))"
}

# write_mycnf [DIR PORT NAME]: the my.cnf of the single server, or of one
# Galera node (then with its wsrep settings)
write_mycnf() {
    local dir=${1:-$run/mysql} port=${2:-$PAYGW_MYSQL_PORT} name=${3:-mysql}
    mkdir -p "$dir/data" "$dir/tmp"
    sed -e "s|@DATADIR@|$dir/data|" \
        -e "s|@PORT@|$port|g" \
        -e "s|@SOCKET@|$run/$name.sock|g" \
        -e "s|@PIDFILE@|$run/$name.pid|" \
        -e "s|@LOGERR@|$logs/$name.err|" \
        -e "s|@TMPDIR@|$dir/tmp|" \
        "$repo/scripts/mysql.cnf.in" > "$dir/my.cnf"
    cat "$repo/scripts/mysql-sized.cnf" >> "$dir/my.cnf"
    [ "$name" = mysql ] || galera_cnf "$port" >> "$dir/my.cnf"
}

mysql_root() { mariadb --defaults-file="$mycnf" --batch --skip-column-names "$@"; }

# Applies each sql/*.sql once, in name order; run/mysql/applied remembers
# which (and their sha256) so a second start does not re-run them.
apply_schema() {
    local applied f name sum old
    applied=${applied_file:-$run/mysql/applied}
    touch "$applied"
    shopt -s nullglob
    local files=("$repo"/sql/*.sql)
    shopt -u nullglob
    for f in "${files[@]}"; do
        name=$(basename "$f")
        sum=$(sha256sum "$f" | cut -d' ' -f1)
        old=$(awk -v n="$name" '$1 == n { print $2 }' "$applied")
        if [ -n "$old" ]; then
            [ "$old" = "$sum" ] || say "warning: sql/$name changed since it" \
                "was applied; 'make stop && rm -rf run/mysql' to rebuild"
            continue
        fi
        mysql_root paygw < "$f" || die "applying sql/$name failed"
        echo "$name $sum" >> "$applied"
        say "applied sql/$name"
    done
}

start_mysql() {
    local pid
    if pid=$(pid_of mysql); then say "mariadb already running (pid $pid)"; return; fi
    fail_if_port_taken mariadb "$PAYGW_MYSQL_PORT" PAYGW_MYSQL_PORT
    write_mycnf
    if [ ! -d "$run/mysql/data/mysql" ]; then
        say "initializing MariaDB datadir run/mysql/data"
        mariadb-install-db --defaults-file="$mycnf" \
            --auth-root-authentication-method=normal --skip-test-db \
            > "$logs/mysql-install.log" 2>&1 || {
            tail -n 30 "$logs/mysql-install.log" >&2
            die "mariadb-install-db failed; see $logs/mysql-install.log"
        }
    fi
    rm -f "$run/mysql.pid"
    # nohup: the stack outlives the terminal that ran `make run`.
    nohup mariadbd --defaults-file="$mycnf" \
        < /dev/null >> "$logs/mysql.out" 2>&1 &
    # mariadbd writes run/mysql.pid itself once it is up.
    local i bg=$!
    for ((i = 0; i < wait_secs * 10; i++)); do
        mariadb-admin --defaults-file="$mycnf" ping > /dev/null 2>&1 && break
        kill -0 "$bg" 2>/dev/null || break
        sleep 0.1
    done
    mariadb-admin --defaults-file="$mycnf" ping > /dev/null 2>&1 || {
        echo "stack: mariadb did not answer within ${wait_secs}s; tail of" \
             "$logs/mysql.err:" >&2
        tail -n 30 "$logs/mysql.err" >&2 || true
        exit 1
    }
    wait_ready mysql "$PAYGW_MYSQL_PORT" "$logs/mysql.err"
    setup_paygw_db
    say "mariadb up on 127.0.0.1:$PAYGW_MYSQL_PORT (pid $(pid_of mysql))"
}

# the database, its user and the schema (through mycnf's server)
setup_paygw_db() {
    local pw
    if [ ! -s "$mypass" ]; then
        (umask 077; head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' \
            | head -c 24 > "$mypass")
    fi
    chmod 600 "$mypass"
    pw=$(cat "$mypass")
    mysql_root <<SQL || die "creating database/user paygw failed"
CREATE DATABASE IF NOT EXISTS paygw
    CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS 'paygw'@'127.0.0.1' IDENTIFIED BY '$pw';
ALTER USER 'paygw'@'127.0.0.1' IDENTIFIED BY '$pw';
GRANT ALL PRIVILEGES ON paygw.* TO 'paygw'@'127.0.0.1';
SQL
    apply_schema
}

# ---- PAYGW_HA=1: Redis Cluster ----------------------------------------------

redis_ports() { local i; for i in 0 1 2 3 4 5; do echo $((PAYGW_REDIS_PORT + i)); done; }

start_redis_cluster() {
    local p pid all=() started=0 i
    for p in $(redis_ports); do
        all+=("127.0.0.1:$p")
        if pid=$(pid_of "redis-$p"); then continue; fi
        fail_if_port_taken "redis $p" "$p" PAYGW_REDIS_PORT
        mkdir -p "$run/redis-$p"
        redis-server --bind 127.0.0.1 --port "$p" \
            --save "" --appendonly no --daemonize yes \
            --cluster-enabled yes --cluster-config-file nodes.conf \
            --cluster-node-timeout 2000 --cluster-replica-validity-factor 0 \
            --pidfile "$run/redis-$p.pid" --logfile "$logs/redis-$p.log" \
            --dir "$run/redis-$p" \
            || die "redis-server failed to start; see $logs/redis-$p.log"
        wait_ready "redis-$p" "$p" "$logs/redis-$p.log"
        started=$((started + 1))
    done
    # a node that comes back finds the others through its nodes.conf
    if ! redis-cli -p "$PAYGW_REDIS_PORT" cluster info 2>/dev/null \
            | grep -q 'cluster_known_nodes:6'; then
        redis-cli --cluster create "${all[@]}" --cluster-replicas 1 \
            --cluster-yes > "$logs/redis-cluster-create.log" 2>&1 || {
            tail -n 30 "$logs/redis-cluster-create.log" >&2
            die "redis-cli --cluster create failed"
        }
    fi
    for ((i = 0; i < wait_secs * 10; i++)); do
        redis-cli -p "$PAYGW_REDIS_PORT" cluster info 2>/dev/null \
            | grep -q 'cluster_state:ok' && break
        sleep 0.1
    done
    say "redis cluster up on 127.0.0.1:$PAYGW_REDIS_PORT..$((PAYGW_REDIS_PORT + 5))" \
        "($started node(s) started)"
}

# ---- PAYGW_HA=1: MariaDB Galera ---------------------------------------------

mysql_ports() { local i; for i in 0 1 2; do echo $((PAYGW_MYSQL_PORT + i)); done; }

galera_cnf() {
    local i=$(($1 - PAYGW_MYSQL_PORT)) g=$PAYGW_GALERA_PORT
    cat <<EOF

[mysqld]
# Galera (PAYGW_HA=1): node $i of 3
binlog_format                  = ROW
default_storage_engine         = InnoDB
innodb_autoinc_lock_mode       = 2
wsrep_on                       = ON
wsrep_provider                 = /usr/lib/galera/libgalera_smm.so
wsrep_cluster_name             = paygw
wsrep_cluster_address          = gcomm://127.0.0.1:$g,127.0.0.1:$((g + 1)),127.0.0.1:$((g + 2))
wsrep_node_name                = node$i
wsrep_node_address             = 127.0.0.1:$((g + i))
wsrep_provider_options         = "gmcast.listen_addr=tcp://127.0.0.1:$((g + i));ist.recv_addr=127.0.0.1:$((g + 10 + i));evs.suspect_timeout=PT3S;evs.inactive_timeout=PT6S"
wsrep_sst_receive_address      = 127.0.0.1:$((g + 20 + i))
wsrep_sst_method               = mariabackup
wsrep_sst_auth                 = root:
EOF
}

# start_galera_node PORT [--wsrep-new-cluster]: starts one node and waits
# until it is Synced
start_galera_node() {
    local p=$1 dir="$run/mysql-$1" i bg
    shift
    fail_if_port_taken "mariadb $p" "$p" PAYGW_MYSQL_PORT
    write_mycnf "$dir" "$p" "mysql-$p"
    if [ ! -d "$dir/data/mysql" ]; then
        mariadb-install-db --defaults-file="$dir/my.cnf" \
            --auth-root-authentication-method=normal --skip-test-db \
            > "$logs/mysql-$p-install.log" 2>&1 \
            || die "mariadb-install-db failed; see $logs/mysql-$p-install.log"
    fi
    rm -f "$run/mysql-$p.pid"
    nohup mariadbd --defaults-file="$dir/my.cnf" "$@" \
        < /dev/null >> "$logs/mysql-$p.out" 2>&1 &
    bg=$!
    for ((i = 0; i < wait_secs * 20; i++)); do
        [ "$(mariadb --defaults-file="$dir/my.cnf" --batch --skip-column-names \
              -e "SHOW STATUS LIKE 'wsrep_local_state_comment'" 2>/dev/null \
              | cut -f2)" = Synced ] && break
        kill -0 "$bg" 2>/dev/null || break
        sleep 0.1
    done
    wait_ready "mysql-$p" "$p" "$logs/mysql-$p.err"
    say "galera node 127.0.0.1:$p up (pid $(pid_of "mysql-$p"))"
}

start_galera() {
    local p running=() first="" boot
    for p in $(mysql_ports); do
        if pid_of "mysql-$p" > /dev/null; then running+=("$p"); fi
    done
    if [ ${#running[@]} -eq 0 ]; then
        # a new cluster, from the node that may bootstrap it (grastate.dat)
        # or the first one
        for p in $(mysql_ports); do
            if grep -qs '^safe_to_bootstrap: 1' "$run/mysql-$p/data/grastate.dat"; then
                first=$p
                break
            fi
        done
        first=${first:-$PAYGW_MYSQL_PORT}
        boot="$run/mysql-$first/data/grastate.dat"
        if [ -f "$boot" ]; then
            sed -i 's/^safe_to_bootstrap: 0/safe_to_bootstrap: 1/' "$boot"
        fi
        start_galera_node "$first" --wsrep-new-cluster
        running+=("$first")
    fi
    for p in $(mysql_ports); do
        pid_of "mysql-$p" > /dev/null || start_galera_node "$p"
    done
    # the database, user and schema through one node: Galera replicates them
    mycnf="$run/mysql-${running[0]}/my.cnf"
    applied_file="$run/galera-applied"
    setup_paygw_db
}

start_sim() {
    local pid
    if pid=$(pid_of sim); then say "simulator already running (pid $pid)"; return; fi
    [ -f "$repo/t/sim/sim.js" ] || die "t/sim/sim.js is missing"
    fail_if_port_taken simulator "$PAYGW_SIM_PORT" PAYGW_SIM_PORT
    rm -f "$run/sim.pid"
    # Alipay and WeChat test keys (kept across runs; the gateway reads them too).
    bash "$repo/scripts/provider-keys.sh" "$run/keys" \
        || die "scripts/provider-keys.sh $run/keys failed"
    nohup node "$repo/t/sim/sim.js" --port "$PAYGW_SIM_PORT" \
        --pidfile "$run/sim.pid" --keys "$run/keys" < /dev/null >> "$logs/sim.log" 2>&1 &
    wait_ready sim "$PAYGW_SIM_PORT" "$logs/sim.log"
    say "simulator up on $sim_url (pid $(pid_of sim))"
}

render_nginx_conf() {
    local src="$repo/nginx.conf.example" left
    [ -f "$src" ] || die "nginx.conf.example is missing"
    sed -e "s|@PAYGW_PORT@|$PAYGW_PORT|g" \
        -e "s|@REDIS_PORT@|$PAYGW_REDIS_PORT|g" \
        -e "s|@MYSQL_PORT@|$PAYGW_MYSQL_PORT|g" \
        -e "s|@MYSQL_PASSWORD_FILE@|$mypass|g" \
        -e "s|@SIM_PORT@|$PAYGW_SIM_PORT|g" \
        -e "s|@ALIPAY_URL@|$PAYGW_ALIPAY_URL|g" \
        -e "s|@WECHAT_URL@|$PAYGW_WECHAT_URL|g" \
        -e "s|@BANK_URL@|$PAYGW_BANK_URL|g" \
        -e "s|@WEBHOOK_RETRY@|$PAYGW_WEBHOOK_RETRY|g" \
        -e "s|@BANK_SERVER@|$(url_server "$PAYGW_BANK_URL")|g" \
        -e "s|@ALIPAY_SERVER@|$(url_server "$PAYGW_ALIPAY_URL")|g" \
        -e "s|@WECHAT_SERVER@|$(url_server "$PAYGW_WECHAT_URL")|g" \
        -e "s|@WECHAT_MERCHANT_SERIAL@|$(head -n1 "$run/keys/wechat_merchant_serial")|g" \
        -e "s|@WECHAT_PLATFORM1_SERIAL@|$(head -n1 "$run/keys/wechat_platform1_serial")|g" \
        -e "s|@WECHAT_PLATFORM2_SERIAL@|$(head -n1 "$run/keys/wechat_platform2_serial")|g" \
        -e "s|@MODULE_PATH@|$module|g" \
        -e "s|@RUN_DIR@|$run|g" \
        -e "s|@REPO@|$repo|g" \
        "$src" > "$run/nginx.conf.tmp"
    left=$(grep -o '@[A-Z_]*@' "$run/nginx.conf.tmp" | sort -u | tr '\n' ' ' || true)
    [ -z "$left" ] || die "nginx.conf.example has unknown placeholders: $left"
    [ "$PAYGW_HA" = 0 ] || ha_nginx_conf "$run/nginx.conf.tmp"
    mv -f "$run/nginx.conf.tmp" "$run/nginx.conf"
}

# PAYGW_HA=1: every Redis node a seed, the Redis location in cluster mode
# (with time to wait out a failover); MySQL writes to the first Galera
# node, then to the next when it fails
ha_nginx_conf() {
    local seeds="" failover="" p
    for p in $(redis_ports); do seeds="$seeds        server     127.0.0.1:$p;\n"; done
    for p in $(mysql_ports); do
        [ "$p" = "$PAYGW_MYSQL_PORT" ] || failover="$failover failover=127.0.0.1:$p"
    done
    sed -i -e "s|^ *server     127.0.0.1:$PAYGW_REDIS_PORT;|$seeds|" \
        -e "s|\(paygw_mysql .* port=$PAYGW_MYSQL_PORT\) |\1$failover |" \
        -e 's|^\( *\)paygw_redis_pass     paygw_redis;|&\n\1paygw_redis_cluster  on;|' \
        -e 's|^\( *paygw_redis_timeout  \)1s;|\13s;|' "$1"
}

start_nginx() {
    local pid out
    if pid=$(pid_of nginx); then say "nginx already running (pid $pid)"; return; fi
    [ -f "$module" ] || die "$module is missing: run 'make build' first"
    fail_if_port_taken nginx "$PAYGW_PORT" PAYGW_PORT
    render_nginx_conf
    out=$("$nginx_bin" -t -p "$run/" -c "$run/nginx.conf" -e "$logs/error.log" 2>&1) || {
        echo "$out" >&2
        die "nginx -t failed on run/nginx.conf (rendered from nginx.conf.example)"
    }
    "$nginx_bin" -p "$run/" -c "$run/nginx.conf" -e "$logs/error.log" || {
        tail -n 30 "$logs/error.log" >&2 || true
        die "nginx failed to start"
    }
    wait_ready nginx "$PAYGW_PORT" "$logs/error.log"
    say "nginx up on 127.0.0.1:$PAYGW_PORT (pid $(pid_of nginx))"
}

# stop_one NAME: TERM, wait up to 30 s, then KILL (with the children, for
# nginx whose workers would otherwise outlive a killed master).
stop_one() {
    local name=$1 pid kids i
    if ! pid=$(pid_of "$name"); then
        rm -f "$run/$name.pid"
        return
    fi
    kids=$(ps -o pid= --ppid "$pid" 2>/dev/null | tr -d ' ' | tr '\n' ' ' || true)
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < wait_secs * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name (pid $pid) ignored TERM for ${wait_secs}s; killing"
        # shellcheck disable=SC2086
        kill -KILL "$pid" $kids 2>/dev/null || true
    fi
    rm -f "$run/$name.pid"
    say "$name stopped (pid $pid)"
}

banner() {
    local url="http://127.0.0.1:$PAYGW_PORT"
    local create_curl
    create_curl=$(PAYGW_PORT=$PAYGW_PORT "$repo/scripts/paygw-curl" --print POST /v1/payments \
        "{\"business_no\":\"DEMO-$(date +%s)\",\"amount\":1999,\"currency\":\"CNY\",\"channel\":\"bank_card\",\"subject\":\"Demo\",\"card\":{\"number\":\"4242424242424242\",\"exp_month\":12,\"exp_year\":2030,\"cvc\":\"123\"}}")
    cat <<EOF

paygw is running at $url

  Demo credentials (SPEC §2, header Authorization: PAYGW-HMAC-SHA256 ...):
    merchant key: key id demo  secret demo-secret  merchant M100  role merchant
    admin key:    key id ops   secret ops-secret   role admin

  Readiness:
    curl -i $url/readyz

  Create a payment (signed now: valid for 300 s, once):
    $create_curl

  Any request, signed for you:
    scripts/paygw-curl GET /v1/payments/<payment_no>

  Simulator $sim_url   Redis 127.0.0.1:$PAYGW_REDIS_PORT   MariaDB 127.0.0.1:$PAYGW_MYSQL_PORT
  (user paygw, password in run/mysql.pass)   Logs: run/logs/   Stop: make stop
EOF
}

# the backends' pid file names: the single servers, or every node
backends() {
    local p
    if [ "$PAYGW_HA" = 1 ]; then
        for p in $(mysql_ports); do echo "mysql-$p"; done
        for p in $(redis_ports); do echo "redis-$p"; done
    else
        echo mysql redis
    fi
}

status() {
    local name pid rc=0
    for name in nginx sim $(backends); do
        if pid=$(pid_of "$name"); then
            printf '%-6s running (pid %s)\n' "$name" "$pid"
        else
            printf '%-6s stopped\n' "$name"
            rc=3
        fi
    done
    return "$rc"
}

case "${1:-}" in
    start)
        mkdir -p "$run" "$logs" "$run/tmp"   # run/tmp: nginx temp paths
        if [ "$PAYGW_HA" = 1 ]; then
            start_redis_cluster
            start_galera
        else
            start_redis
            start_mysql
        fi
        start_sim
        start_nginx
        banner
        ;;
    stop)
        # whatever was started, single servers or clusters (PAYGW_HA=1
        # make run, then a plain make stop): every pid file under run/
        for c in nginx sim $(backends) $(cd "$run" 2>/dev/null \
                && ls mysql*.pid redis*.pid 2>/dev/null | sed 's/\.pid$//'); do
            stop_one "$c"
        done
        ;;
    status)
        status
        ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac
