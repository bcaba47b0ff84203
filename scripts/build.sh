#!/usr/bin/env bash
# Build ngx_http_paygw_module.so against Debian's nginx source (nginx-dev),
# so the module is binary compatible with the installed /usr/sbin/nginx.
#
#   scripts/build.sh           -> build/objs/ngx_http_paygw_module.so
#   scripts/build.sh --asan    -> build/objs-asan/ngx_http_paygw_module.so
#                                 (AddressSanitizer + UBSan, -O1)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
asan=0
case "${1:-}" in
    "") ;;
    --asan) asan=1 ;;
    *) echo "usage: $0 [--asan]" >&2; exit 2 ;;
esac

ngx_dist=/usr/share/nginx/src
src="$repo/build/nginx-src"
if [ "$asan" = 1 ]; then objs="$repo/build/objs-asan"; else objs="$repo/build/objs"; fi

[ -f "$repo/config" ] || { echo "build: $repo/config is missing (nginx addon config)" >&2; exit 1; }
[ -f "$ngx_dist/conf_flags" ] || { echo "build: $ngx_dist not found: install nginx-dev (scripts/deps.sh)" >&2; exit 1; }

if [ ! -f "$src/conf_flags" ]; then
    mkdir -p "$repo/build"
    rm -rf "$src.tmp"
    cp -a "$ngx_dist" "$src.tmp"
    mv "$src.tmp" "$src"
fi

# Debian's own compiler/linker flags, from `nginx -V`, so the module is built
# the way the distribution's nginx was. -Werror: warnings fail the build.
ngx_v=$(nginx -V 2>&1)
deb_cc=$(sed -n "s/.*--with-cc-opt='\([^']*\)'.*/\1/p" <<<"$ngx_v")
deb_ld=$(sed -n "s/.*--with-ld-opt='\([^']*\)'.*/\1/p" <<<"$ngx_v")
cc_opt="$deb_cc -Werror"
ld_opt="$deb_ld"
if [ "$asan" = 1 ]; then
    cc_opt="$cc_opt -fsanitize=address,undefined -fno-omit-frame-pointer -g -O1"
    ld_opt="$ld_opt -fsanitize=address,undefined"
fi

# A user's CFLAGS would replace nginx's warning flags (and -Werror).
unset CFLAGS

# Reconfigure when never configured, when config changed, or when the flags
# differ from the ones the Makefile was generated with.
flags_stamp="$objs/.paygw-flags"
flags="$cc_opt|$ld_opt"
if [ ! -f "$objs/Makefile" ] || [ "$repo/config" -nt "$objs/Makefile" ] \
   || [ "$(cat "$flags_stamp" 2>/dev/null)" != "$flags" ]; then
    echo "build: configuring nginx $(nginx -v 2>&1 | sed 's/.*\///') for $objs"
    mkdir -p "$objs"
    (
        cd "$src"
        # shellcheck disable=SC1091
        . ./conf_flags
        ./configure "${NGX_CONF_FLAGS[@]}" \
            --with-cc-opt="$cc_opt" --with-ld-opt="$ld_opt" \
            --add-dynamic-module="$repo" --builddir="$objs"
    ) > "$objs/configure.log" 2>&1 || {
        echo "build: nginx configure failed; tail of $objs/configure.log:" >&2
        tail -n 30 "$objs/configure.log" >&2
        exit 1
    }
    printf '%s' "$flags" > "$flags_stamp"
fi

make -C "$src" -f "$objs/Makefile" -j"$(nproc)" modules
so="$objs/ngx_http_paygw_module.so"
[ -f "$so" ] || { echo "build: $so was not produced" >&2; exit 1; }
echo "build: $so"
