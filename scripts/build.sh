#!/usr/bin/env bash
# Build ngx_http_paygw_module.so against Debian's nginx source (nginx-dev),
# so the module is binary compatible with the installed /usr/sbin/nginx.
#
#   scripts/build.sh           -> build/objs/ngx_http_paygw_module.so
#                                 (what ships: `make build`, `make run`)
#   scripts/build.sh --test    -> the same, and the test-only module
#                                 build/objs-test/ngx_http_paygw_test_module.so
#   scripts/build.sh --asan    -> build/objs-asan/ngx_http_paygw_module.so and
#                                 build/objs-asan-test/ngx_http_paygw_test_module.so
#                                 (AddressSanitizer + UBSan, -O1; tests only)
#
# The test module (t/module/) is configured into a build directory of its
# own, so no build directory of the shipped module ever contains test code.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
asan=0
test_module=0
for arg in "$@"; do
    case "$arg" in
        --asan) asan=1; test_module=1 ;;
        --test) test_module=1 ;;
        *) echo "usage: $0 [--test] [--asan]" >&2; exit 2 ;;
    esac
done

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

# build ADDON_DIR OBJS MODULE_NAME [STAMP_EXTRA]: configure nginx with one
# dynamic module into OBJS and build it.  Reconfigure when never
# configured, when the addon's config changed, or when the flags (and
# STAMP_EXTRA) differ from the ones the Makefile was generated with.
build() {
    local addon=$1 objs=$2 name=$3 extra=${4:-}
    local flags_stamp="$objs/.paygw-flags"
    local flags="$cc_opt|$ld_opt${extra:+|$extra}"
    local so="$objs/$name.so"

    if [ ! -f "$objs/Makefile" ] || [ "$addon/config" -nt "$objs/Makefile" ] \
       || [ "$(cat "$flags_stamp" 2>/dev/null)" != "$flags" ]; then
        echo "build: configuring nginx $(nginx -v 2>&1 | sed 's/.*\///') for $objs"
        mkdir -p "$objs"
        (
            cd "$src"
            # shellcheck disable=SC1091
            . ./conf_flags
            ./configure "${NGX_CONF_FLAGS[@]}" \
                --with-cc-opt="$cc_opt" --with-ld-opt="$ld_opt" \
                --add-dynamic-module="$addon" --builddir="$objs"
        ) > "$objs/configure.log" 2>&1 || {
            echo "build: nginx configure failed; tail of $objs/configure.log:" >&2
            tail -n 30 "$objs/configure.log" >&2
            exit 1
        }
        printf '%s' "$flags" > "$flags_stamp"
    fi

    make -C "$src" -f "$objs/Makefile" -j"$(nproc)" modules
    [ -f "$so" ] || { echo "build: $so was not produced" >&2; exit 1; }
    echo "build: $so"
}

build "$repo" "$objs" ngx_http_paygw_module

if [ "$test_module" = 1 ]; then
    # the test module depends on every header of src/ (t/module/config)
    build "$repo/t/module" "$objs-test" ngx_http_paygw_test_module \
        "$(cd "$repo" && echo src/*.h)"
fi
