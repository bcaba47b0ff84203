#!/usr/bin/env bash
# Test keys for the simulated Alipay and WeChat Pay (t/sim/sim.js --keys DIR)
# and for the gateway that talks to them:
#
#   scripts/provider-keys.sh DIR
#
#   alipay_app_private.pem / alipay_app_public.pem   merchant app key pair
#       (the gateway signs requests, the simulator verifies)
#   alipay_private.pem / alipay_public.pem           "Alipay's" key pair
#       (the simulator signs answers and notifies, the gateway verifies)
#   wechat_merchant_private.pem / _public.pem, wechat_merchant_serial
#   wechat_platform1_private.pem / _public.pem, wechat_platform1_serial
#   wechat_platform2_...                             (for rotation tests)
#   wechat_apiv3.key      32 ASCII alphanumerics, no newline
#
# RSA 2048, private keys PKCS#8 PEM (mode 600), public keys SPKI PEM;
# serials are 40 upper-case hex digits. Files that exist are kept, so the
# script is safe to run again; each file appears complete or not at all.
# Test keys only: never for real money.
set -euo pipefail

[ $# -eq 1 ] && [ -n "$1" ] || { echo "usage: $0 DIR" >&2; exit 2; }
dir=$1
mkdir -p "$dir"

# Writes stdin to $1 through a temp file in the same dir (atomic rename);
# empty input (the generating command failed) leaves no file.
put() {
    local file=$1 mode=$2 tmp
    tmp=$(mktemp "$file.XXXXXX")
    cat > "$tmp"
    if [ ! -s "$tmp" ]; then
        rm -f "$tmp"
        echo "$0: could not make $file" >&2
        return 1
    fi
    chmod "$mode" "$tmp"
    mv -f "$tmp" "$file"
}

# Key pair $1_private.pem / $1_public.pem; the public key is (re)derived
# from the private one when it is missing.
pair() {
    local priv="$dir/$1_private.pem" pub="$dir/$1_public.pem"
    if [ ! -s "$priv" ]; then
        openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 2>/dev/null \
            | put "$priv" 600
        rm -f "$pub"
    fi
    if [ ! -s "$pub" ]; then
        openssl pkey -in "$priv" -pubout | put "$pub" 644
    fi
}

serial() {
    local file="$dir/$1_serial"
    [ -s "$file" ] || openssl rand -hex 20 | tr a-f A-F | put "$file" 644
}

apiv3_key() {
    local file="$dir/wechat_apiv3.key" key=''
    [ -s "$file" ] && return
    # No `head -c` on an endless stream: under pipefail its SIGPIPE fails.
    while [ ${#key} -lt 32 ]; do
        key+=$(openssl rand -base64 48 | tr -dc 'A-Za-z0-9')
    done
    printf '%s' "${key:0:32}" | put "$file" 600
}

# RSA key generation dominates: the five pairs in parallel.
pids=()
for name in alipay_app alipay wechat_merchant wechat_platform1 wechat_platform2; do
    pair "$name" &
    pids+=($!)
done
for pid in "${pids[@]}"; do
    wait "$pid"     # a failed pair fails the script (set -e)
done
for name in wechat_merchant wechat_platform1 wechat_platform2; do
    serial "$name"
done
apiv3_key
