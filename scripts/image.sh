#!/usr/bin/env bash
# make image: build the container image paygw:dev (docker/Dockerfile) with
# the engine this machine has, then smoke-test it against the `make run`
# backends: /readyz answers 200, the HEALTHCHECK passes, one signed payment
# succeeds through the container. Idempotent; prints what it does.
#
#   scripts/image.sh            build + smoke test
#   scripts/image.sh --build    build only
#
# Environment:
#   PAYGW_IMAGE (paygw:dev)       the tag to build
#   BASE_IMAGE                    the base of both stages; default: a local
#                                 paygw-base:bookworm made with mmdebstrap
#                                 when docker.io does not answer
#   PAYGW_IMAGE_PORT (8088)       the port the container listens on (host
#                                 network; `make run`'s nginx keeps 8080)
#   PAYGW_ENGINE (podman|docker)  force an engine
#   PAYGW_REDIS_PORT, PAYGW_MYSQL_PORT, PAYGW_SIM_PORT as for make run
#
# podman (Debian 12's 4.3) runs containers here only with runc and lowered
# rlimits; both are passed on every call. Builds use the host network (the
# build stage runs apt-get against the host's mirror).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
work=$repo/build/image
image=${PAYGW_IMAGE:-paygw:dev}
port=${PAYGW_IMAGE_PORT:-8088}
redis_port=${PAYGW_REDIS_PORT:-6390}
mysql_port=${PAYGW_MYSQL_PORT:-3316}
sim_port=${PAYGW_SIM_PORT:-8091}
local_base=paygw-base:bookworm
container=paygw-image-smoke
build_only=0
[ "${1:-}" = "--build" ] && build_only=1

t0=$(date +%s)
say() { printf 'image: [%3ss] %s\n' "$(( $(date +%s) - t0 ))" "$*"; }
die() { echo "image: $*" >&2; exit 1; }

installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

apt_install() {
    local missing=() p
    for p in "$@"; do installed "$p" || missing+=("$p"); done
    [ "${#missing[@]}" -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "need root to install: ${missing[*]}"
    say "installing ${missing[*]} (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "${missing[@]}" > "$work/apt.log" 2>&1 \
        || { tail -n 20 "$work/apt.log" >&2; die "apt-get install failed"; }
}

mkdir -p "$work"

# ---- the engine -----------------------------------------------------------
engine=${PAYGW_ENGINE:-}
if [ -z "$engine" ]; then
    if command -v podman >/dev/null 2>&1; then
        engine=podman
    elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        engine=docker
    else
        engine=podman
    fi
fi
run_opts=()
build_opts=()
case "$engine" in
    podman)
        apt_install podman runc
        run_opts=(--runtime runc --ulimit nofile=20000:20000
                  --ulimit nproc=32768:32768)
        build_opts=(--runtime runc --ulimit nofile=20000:20000
                    --ulimit nproc=32768:32768 --format docker)
        ;;
    docker)
        docker info >/dev/null 2>&1 || die "docker: no engine answers"
        ;;
    *) die "PAYGW_ENGINE=$engine: podman or docker" ;;
esac
say "engine: $engine ($($engine --version 2>/dev/null | head -n1))"

# ---- the base -------------------------------------------------------------
# The Debian mirror apt uses here (deb822 or one-line sources).
debian_mirror() {
    local m
    m=$(grep -hoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list \
            /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
            2>/dev/null | head -n1 | tr -d ' ') || true
    echo "${m%/}"
}

make_local_base() {
    # the name's .tar tells mmdebstrap to write a tarball
    local mirror sec tar=$work/base.tar tmp=$work/base.tmp.tar
    apt_install mmdebstrap
    mirror=$(debian_mirror)
    [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
    sec=${mirror%/debian}/debian-security
    say "making $local_base with mmdebstrap (minbase bookworm from $mirror)"
    rm -rf "$tmp" "$tar"
    mmdebstrap --quiet --variant=minbase bookworm "$tmp" \
        "deb $mirror bookworm main" \
        "deb $mirror bookworm-updates main" \
        "deb $sec bookworm-security main" > "$work/mmdebstrap.log" 2>&1 \
        || { tail -n 20 "$work/mmdebstrap.log" >&2; die "mmdebstrap failed"; }
    mv -f "$tmp" "$tar"
    $engine import "$tar" "$local_base" > /dev/null 2> "$work/import.log" \
        || { cat "$work/import.log" >&2; die "$engine import failed"; }
    rm -f "$tar"
    say "imported $local_base"
}

base=${BASE_IMAGE:-}
if [ -z "$base" ]; then
    if $engine image inspect "$local_base" >/dev/null 2>&1; then
        base=$local_base
        say "base: $local_base (local, made earlier)"
    elif $engine image inspect docker.io/library/debian:bookworm-slim \
            >/dev/null 2>&1; then
        base=docker.io/library/debian:bookworm-slim
        say "base: $base (present)"
    elif timeout 20 $engine pull -q docker.io/library/debian:bookworm-slim \
            >/dev/null 2>&1; then
        base=docker.io/library/debian:bookworm-slim
        say "base: $base (pulled)"
    else
        say "no registry answers (docker.io)"
        make_local_base
        base=$local_base
    fi
fi

# ---- build ----------------------------------------------------------------
say "building $image from docker/Dockerfile (BASE_IMAGE=$base)"
old_id=$($engine image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
if ! $engine build "${build_opts[@]}" --network host \
        --build-arg BASE_IMAGE="$base" -f docker/Dockerfile -t "$image" . \
        > "$work/build.log" 2>&1; then
    tail -n 40 "$work/build.log" >&2
    die "build failed; the whole log is $work/build.log"
fi
say "built $image: $($engine image inspect --format '{{.Id}}' "$image" | cut -c1-19)," \
    "$(( $($engine image inspect --format '{{.Size}}' "$image") / 1000000 )) MB," \
    "$($engine run --rm "${run_opts[@]}" --no-healthcheck --entrypoint nginx \
        "$image" -v 2>&1)"
new_id=$($engine image inspect --format '{{.Id}}' "$image")
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
    # the previous paygw:dev, now untagged (kept if a container uses it)
    $engine rmi "$old_id" > /dev/null 2>&1 && say "removed the previous $image"
fi
[ "$build_only" = 1 ] && exit 0

# ---- smoke test -----------------------------------------------------------
started_stack=0
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
cleanup() {
    $engine rm -f "$container" >/dev/null 2>&1 || true
    if [ "$started_stack" = 1 ]; then
        bash scripts/stack.sh stop > /dev/null && say "stopped the stack it started"
    fi
}
trap cleanup EXIT
$engine rm -f "$container" >/dev/null 2>&1 || true

if port_open "$redis_port" && port_open "$mysql_port" && port_open "$sim_port" \
   && [ -s run/mysql.pass ] && [ -d run/keys ]; then
    say "using the running stack (Redis $redis_port, MariaDB $mysql_port," \
        "simulator $sim_port)"
else
    say "starting the stack (make run) for its backends"
    make -s run > "$work/stack.log" 2>&1 || { tail -n 30 "$work/stack.log" >&2;
                                               die "make run failed"; }
    started_stack=1
fi
port_open "$port" && die "port $port is taken (set PAYGW_IMAGE_PORT)"

# /etc/paygw for the container: test data only (conf/demo, run/keys).
etc=$work/etc-paygw
rm -rf "$etc"
mkdir -p "$etc/secrets"
cp docker/nginx.conf.template "$etc/nginx.conf.template"
cp conf/demo/policy.conf "$etc/policy.conf"
cp conf/demo/keys.conf conf/demo/acquirer.secret conf/demo/webhook_secrets.conf \
    run/mysql.pass "$etc/secrets/"
for f in alipay_app_private.pem alipay_public.pem wechat_merchant_private.pem \
         wechat_apiv3.key; do
    cp "run/keys/$f" "$etc/secrets/$f"
done
cp run/keys/wechat_platform1_public.pem "$etc/secrets/wechat_platform_public.pem"
chown -R 10001:10001 "$etc"
chmod -R go-rwx "$etc"

say "running $container: --read-only, host network, port $port"
$engine run -d --name "$container" "${run_opts[@]}" --network host \
    --read-only --tmpfs /tmp:rw,size=64m,mode=1777 \
    -v "$etc:/etc/paygw:ro" \
    -e PAYGW_LISTEN="$port" \
    -e PAYGW_REDIS="127.0.0.1:$redis_port" \
    -e PAYGW_MYSQL_HOST=127.0.0.1 -e PAYGW_MYSQL_PORT="$mysql_port" \
    -e PAYGW_BANK_SERVER="127.0.0.1:$sim_port" \
    -e PAYGW_ALIPAY_SERVER="127.0.0.1:$sim_port" \
    -e PAYGW_WECHAT_SERVER="127.0.0.1:$sim_port" \
    -e PAYGW_PUBLIC_URL="http://127.0.0.1:$port" \
    -e PAYGW_BANK_MERCHANT_ID=ACQ-M100 \
    -e PAYGW_ALIPAY_APP_ID=2021000000000001 \
    -e PAYGW_WECHAT_MERCHANT_ID=1900000001 \
    -e PAYGW_WECHAT_APP_ID=wxd678efh567hg6787 \
    -e PAYGW_WECHAT_MERCHANT_SERIAL="$(head -n1 run/keys/wechat_merchant_serial)" \
    -e PAYGW_WECHAT_PLATFORM_SERIAL="$(head -n1 run/keys/wechat_platform1_serial)" \
    "$image" > /dev/null 2> "$work/run.log" \
    || { cat "$work/run.log" >&2; die "$engine run failed"; }
# (podman prints that it cannot schedule the HEALTHCHECK without systemd;
# it is run by hand below.)

code=000
for _ in $(seq 1 150); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz" || true)
    [ "$code" = 200 ] && break
    $engine ps -q --filter "name=^$container\$" | grep -q . || break
    sleep 0.2
done
if [ "$code" != 200 ]; then
    $engine logs "$container" 2>&1 | tail -n 30 >&2
    die "/readyz answered $code"
fi
say "GET /readyz: 200 $(curl -s "http://127.0.0.1:$port/readyz")"
say "user in the container: $($engine exec "$container" id -un)," \
    "root filesystem read-only: $($engine inspect --format '{{.HostConfig.ReadonlyRootfs}}' "$container")"

if [ "$engine" = podman ]; then
    $engine healthcheck run "$container" > /dev/null \
        || die "HEALTHCHECK failed"
else
    # docker runs it on its own schedule; run the same command now
    $engine exec "$container" /usr/local/bin/paygw-entrypoint healthcheck \
        || die "HEALTHCHECK command failed"
fi
say "HEALTHCHECK (GET /healthz): healthy"

body="{\"business_no\":\"IMG-$(date +%s)-$$\",\"amount\":1999,\"currency\":\"CNY\",\"channel\":\"bank_card\",\"subject\":\"image smoke\",\"card\":{\"number\":\"4242424242424242\",\"exp_month\":12,\"exp_year\":2030,\"cvc\":\"123\"}}"
# paygw-curl --print gives the signed curl command; -w adds the status.
cmd=$(PAYGW_PORT=$port scripts/paygw-curl --print POST /v1/payments "$body")
reply=$(eval "$cmd -w '\n%{http_code}'" 2>&1) || true
http=$(tail -n1 <<<"$reply")
json=$(sed '$d' <<<"$reply")
pno=$(grep -o '"payment_no":"[^"]*"' <<<"$json" | cut -d'"' -f4 || true)
status=$(grep -o '"status":"[^"]*"' <<<"$json" | head -n1 | cut -d'"' -f4 || true)
if [ "$http" != 201 ] || [ "$status" != succeeded ]; then
    echo "$reply" >&2
    $engine logs "$container" 2>&1 | tail -n 20 >&2
    die "payment through the container: HTTP $http, status '$status'"
fi
say "POST /v1/payments (bank_card, signed): HTTP $http, $pno $status"
got=$(PAYGW_PORT=$port scripts/paygw-curl GET "/v1/payments/$pno" | grep -o '"status":"[^"]*"' | head -n1)
say "GET /v1/payments/$pno: $got"
# the audit line is written in the LOG phase, after the answer: wait for it
audit=no
for _ in $(seq 1 20); do
    $engine logs "$container" > "$work/audit.log" 2>/dev/null || true
    if grep -q "\"payment\":\"$pno\"" "$work/audit.log"; then
        audit=yes; break
    fi
    sleep 0.1
done
[ "$audit" = yes ] || die "no audit line for $pno on the container's stdout"
say "audit line for $pno on the container's stdout"
# stop: the image's STOPSIGNAL (SIGQUIT) makes nginx drain, exit 0
$engine stop -t 30 "$container" > /dev/null 2>&1 || true
rc=$($engine inspect --format '{{.State.ExitCode}}' "$container" 2>/dev/null || echo "?")
# (to a file first: grep -q would close the pipe early, and with pipefail
# the logs command's SIGPIPE would fail the test)
$engine logs "$container" > "$work/stop.log" 2>&1 || true
if [ "$rc" = 0 ] && grep -q "gracefully shutting down" "$work/stop.log"; then
    say "$engine stop: SIGQUIT, workers shut down gracefully, exit code 0"
else
    die "$engine stop: exit code $rc, no graceful shutdown in the log"
fi
say "done: $image works (the container and anything it started are removed)"
