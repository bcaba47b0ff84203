#!/usr/bin/env bash
# Install the Debian packages paygw needs to build, test and run.
# Idempotent: does nothing (and touches no network) when all are present.
# Never leaves a system redis-server or mariadb running: the stack and the
# tests start their own private instances on other ports.
set -euo pipefail

pkgs=(build-essential nginx nginx-dev libhiredis-dev libmariadb-dev
      libmsgpack-dev libjansson-dev libssl-dev libpcre2-dev zlib1g-dev
      redis-server mariadb-server mariadb-client wrk curl perl procps
      python3 python3-prometheus-client gdb
      galera-4 mariadb-backup socat)   # PAYGW_HA=1: Galera, its SST
# Node may come from elsewhere (e.g. nodesource); only Debian's if absent.
command -v node >/dev/null 2>&1 || pkgs+=(nodejs)

installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

missing=()
for p in "${pkgs[@]}"; do
    installed "$p" || missing+=("$p")
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "deps: all ${#pkgs[@]} packages present"
    exit 0
fi

echo "deps: installing: ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
    echo "deps: must run as root to install packages (apt-get)" >&2
    exit 1
fi

# policy-rc.d exit 101 forbids maintainer scripts to start services.
policy=/usr/sbin/policy-rc.d
saved=""
if [ -e "$policy" ]; then
    saved=$(mktemp)
    cp -a "$policy" "$saved"
fi
restore_policy() {
    if [ -n "$saved" ]; then
        mv -f "$saved" "$policy"
    else
        rm -f "$policy"
    fi
}
trap restore_policy EXIT
printf '#!/bin/sh\nexit 101\n' > "$policy"
chmod 755 "$policy"

apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    "${missing[@]}"

# Belt and braces: if a service got started anyway, stop it.
for svc in redis-server mariadb mysql; do
    service "$svc" stop >/dev/null 2>&1 || true
done

for p in "${missing[@]}"; do
    installed "$p" || { echo "deps: $p still not installed" >&2; exit 1; }
done
echo "deps: done"
