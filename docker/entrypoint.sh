#!/bin/bash
# paygw container entrypoint.
#
#   paygw-entrypoint nginx [nginx options]   start nginx in the foreground
#   paygw-entrypoint healthcheck             GET /healthz on $PAYGW_LISTEN
#   paygw-entrypoint render                  print the configuration it would use
#   paygw-entrypoint render-file TEMPLATE    render TEMPLATE from the environment,
#                                            PAYGW_RESOLVER defaulted as above
#                                            (make k8s-check uses it)
#   paygw-entrypoint <anything else>         exec it (a shell, nginx -V, ...)
#
# Configuration: /etc/paygw/nginx.conf is used as it is. Without it,
# /etc/paygw/nginx.conf.template (else the image's example template,
# /usr/share/paygw/nginx.conf.template) is rendered into /tmp/paygw/:
# every ${PAYGW_NAME} is replaced by that environment variable, and a
# reference to one that is not set is an error. PAYGW_MYSQL_HOST may be a
# name: the module connects to IP addresses only (a name would be resolved
# with a blocking call), so it is resolved here, once, at start.
# PAYGW_RESOLVER (nginx's resolver, for merchants' notify_url hosts), if
# not set, is the first nameserver of /etc/resolv.conf: in a pod, the
# cluster DNS; in a container, the engine's.
#
# Nothing is written outside /tmp: the image runs with a read-only root.
set -euo pipefail

conf_dir=/etc/paygw
out_dir=/tmp/paygw

die() { echo "paygw-entrypoint: $*" >&2; exit 1; }

is_ipv4() { [[ "$1" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]]; }

resolve_mysql_host() {
    local h=${PAYGW_MYSQL_HOST:-} ip
    [ -n "$h" ] || return 0
    is_ipv4 "$h" && return 0
    ip=$(getent ahostsv4 "$h" | awk 'NR == 1 { print $1 }') || true
    [ -n "$ip" ] || die "PAYGW_MYSQL_HOST=$h does not resolve to an IPv4 address"
    echo "paygw-entrypoint: PAYGW_MYSQL_HOST $h is $ip" >&2
    export PAYGW_MYSQL_HOST=$ip
}

# PAYGW_RESOLVER: as set, else /etc/resolv.conf's first nameserver (an
# IPv6 address in brackets, its zone dropped: nginx's resolver syntax).
default_resolver() {
    local ns
    [ -n "${PAYGW_RESOLVER:-}" ] && return 0
    ns=$(awk '$1 == "nameserver" { print $2; exit }' /etc/resolv.conf 2>/dev/null) || true
    [ -n "$ns" ] || die "no nameserver in /etc/resolv.conf: set PAYGW_RESOLVER"
    ns=${ns%%%*}
    [[ "$ns" == *:* ]] && ns="[$ns]"
    echo "paygw-entrypoint: PAYGW_RESOLVER is $ns (/etc/resolv.conf)" >&2
    export PAYGW_RESOLVER=$ns
}

# render TEMPLATE: ${PAYGW_*} replaced from the environment, on stdout.
render() {
    local line name out
    while IFS= read -r line || [ -n "$line" ]; do
        out=""
        while [[ "$line" =~ ^([^$]*)\$\{(PAYGW_[A-Z0-9_]+)\}(.*)$ ]]; do
            name=${BASH_REMATCH[2]}
            [ -n "${!name+x}" ] || die "$1 uses \${$name}, which is not set"
            out+="${BASH_REMATCH[1]}${!name}"
            line=${BASH_REMATCH[3]}
        done
        printf '%s\n' "$out$line"
    done < "$1"
}

config() {
    if [ -f "$conf_dir/nginx.conf" ]; then
        echo "$conf_dir/nginx.conf"
        return
    fi
    local tpl=$conf_dir/nginx.conf.template
    [ -f "$tpl" ] || tpl=/usr/share/paygw/nginx.conf.template
    mkdir -p "$out_dir"
    resolve_mysql_host
    default_resolver
    render "$tpl" > "$out_dir/nginx.conf.tmp"
    mv -f "$out_dir/nginx.conf.tmp" "$out_dir/nginx.conf"
    echo "$out_dir/nginx.conf"
}

healthcheck() {
    local port=${PAYGW_LISTEN:-8080} status
    port=${port##*:}
    exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
    printf 'GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
    IFS= read -r -t 3 status <&3 || exit 1
    [[ "$status" == "HTTP/1."?" 200 "* ]] || exit 1
}

case "${1:-nginx}" in
    nginx)
        [ $# -gt 0 ] && shift
        conf=$(config)
        mkdir -p /tmp/nginx
        exec nginx -e stderr -c "$conf" -g 'daemon off;' "$@"
        ;;
    healthcheck)
        healthcheck
        ;;
    render)
        conf=$(config)
        cat "$conf"
        ;;
    render-file)
        [ $# -eq 2 ] || die "usage: $0 render-file TEMPLATE"
        default_resolver
        render "$2"
        ;;
    *)
        exec "$@"
        ;;
esac
