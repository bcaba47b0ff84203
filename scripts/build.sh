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
# Other nginx versions (`make build NGINX_SRC=...`):
#
#   scripts/build.sh --nginx-src=SRC [--test] [--asan]
#       SRC is an nginx source tree or a .tar.gz of one (a release tarball
#       with ./configure, or a git archive of the nginx repository with
#       auto/configure).  Everything goes under build/nginx-VERSION/:
#         src/                      a private copy of the sources
#         sbin/nginx                that nginx (--with-compat), built once
#         objs/ngx_http_paygw_module.so, objs-test/..., objs-asan/...
#   scripts/build.sh --nginx-src=SRC --where
#       prints build/nginx-VERSION (absolute) and builds nothing.
#
# A dynamic module loads only into the nginx version it was built for, and
# (--with-compat) any build of that version configured --with-compat.
#
# The test module (t/module/) is configured into a build directory of its
# own, so no build directory of the shipped module ever contains test code.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
asan=0
test_module=0
nginx_src=
where=0
for arg in "$@"; do
    case "$arg" in
        --asan) asan=1; test_module=1 ;;
        --test) test_module=1 ;;
        --nginx-src=*) nginx_src=${arg#--nginx-src=} ;;
        --where) where=1 ;;
        *) echo "usage: $0 [--test] [--asan] [--nginx-src=DIR|TAR.GZ [--where]]" >&2
           exit 2 ;;
    esac
done

[ -f "$repo/config" ] || { echo "build: $repo/config is missing (nginx addon config)" >&2; exit 1; }

# Debian's own compiler/linker flags, from `nginx -V`, so the module is built
# the way the distribution's nginx was. -Werror: warnings fail the build.
ngx_v=$(nginx -V 2>&1) || { echo "build: nginx not found: install nginx (scripts/deps.sh)" >&2; exit 1; }
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

# configure_args: the arguments of configure other than the flags and the
# addon; configure_cmd: configure's path in the source tree.
if [ -z "$nginx_src" ]; then
    ngx_dist=/usr/share/nginx/src
    src="$repo/build/nginx-src"
    base="$repo/build"
    [ -f "$ngx_dist/conf_flags" ] || { echo "build: $ngx_dist not found: install nginx-dev (scripts/deps.sh)" >&2; exit 1; }

    if [ ! -f "$src/conf_flags" ]; then
        mkdir -p "$repo/build"
        rm -rf "$src.tmp"
        cp -a "$ngx_dist" "$src.tmp"
        mv "$src.tmp" "$src"
    fi
    # shellcheck disable=SC1091
    . "$src/conf_flags"
    configure_args=("${NGX_CONF_FLAGS[@]}")
    configure_cmd=./configure
    ngx_version=$(nginx -v 2>&1 | sed 's/.*\///')
else
    # the version, from src/core/nginx.h of the tree or the archive
    nginx_h='#define NGINX_VERSION'
    if [ -d "$nginx_src" ]; then
        [ -f "$nginx_src/src/core/nginx.h" ] \
            || { echo "build: $nginx_src is not an nginx source tree (no src/core/nginx.h)" >&2; exit 1; }
        ngx_version=$(grep "$nginx_h" "$nginx_src/src/core/nginx.h")
    elif [ -f "$nginx_src" ]; then
        ngx_version=$(tar -xzOf "$nginx_src" --wildcards '*/src/core/nginx.h' 2>/dev/null \
                      | grep "$nginx_h") \
            || { echo "build: $nginx_src is not a .tar.gz of nginx sources" >&2; exit 1; }
    else
        echo "build: NGINX_SRC=$nginx_src: no such file or directory" >&2
        exit 1
    fi
    ngx_version=$(sed -n 's/.*"\([0-9][0-9.]*\)".*/\1/p' <<<"$ngx_version" | head -n1)
    [ -n "$ngx_version" ] || { echo "build: no NGINX_VERSION in $nginx_src" >&2; exit 1; }
    base="$repo/build/nginx-$ngx_version"
    if [ "$where" = 1 ]; then echo "$base"; exit 0; fi
    src="$base/src"

    # a private copy: configure writes a Makefile into the tree
    if [ ! -f "$src/src/core/nginx.h" ]; then
        echo "build: unpacking nginx $ngx_version from $nginx_src into $src"
        mkdir -p "$base"
        rm -rf "$src.tmp"
        mkdir "$src.tmp"
        if [ -d "$nginx_src" ]; then
            cp -a "$nginx_src/." "$src.tmp/"
        else
            tar -xzf "$nginx_src" -C "$src.tmp" --strip-components=1
        fi
        mv "$src.tmp" "$src"
    fi
    # the modules a typical nginx has (those of Debian's --with list that
    # need no extra library), and --with-compat, so that a module built
    # here loads into any nginx $ngx_version configured --with-compat
    configure_args=(--prefix="$base" --with-compat --with-debug --with-threads
        --with-pcre-jit --with-http_ssl_module --with-http_v2_module
        --with-http_realip_module --with-http_stub_status_module
        --with-http_auth_request_module --with-http_slice_module
        --with-http_sub_module --with-http_gunzip_module
        --with-http_gzip_static_module --with-http_secure_link_module)
    if [ -x "$src/configure" ]; then configure_cmd=./configure; else configure_cmd=./auto/configure; fi
fi
if [ "$where" = 1 ]; then echo "$base"; exit 0; fi
if [ "$asan" = 1 ]; then objs="$base/objs-asan"; else objs="$base/objs"; fi

# configure_into OBJS ADDON STAMP_EXTRA: configure nginx into OBJS (with the
# dynamic module ADDON unless it is empty), unless it already is with the
# same flags.  Reconfigures when never configured, when the addon's config
# changed, or when the flags (and STAMP_EXTRA) differ from the ones the
# Makefile was generated with.
configure_into() {
    local objs=$1 addon=$2 extra=${3:-}
    local flags_stamp="$objs/.paygw-flags"
    local flags="$cc_opt|$ld_opt${extra:+|$extra}"
    # (Debian's configure arguments are fixed; others' are part of the stamp)
    [ -z "$nginx_src" ] || flags="$flags|${configure_args[*]}"

    if [ ! -f "$objs/Makefile" ] || { [ -n "$addon" ] && [ "$addon/config" -nt "$objs/Makefile" ]; } \
       || [ "$(cat "$flags_stamp" 2>/dev/null)" != "$flags" ]; then
        echo "build: configuring nginx $ngx_version for $objs"
        mkdir -p "$objs"
        (
            cd "$src"
            "$configure_cmd" "${configure_args[@]}" \
                --with-cc-opt="$cc_opt" --with-ld-opt="$ld_opt" \
                ${addon:+--add-dynamic-module="$addon"} --builddir="$objs"
        ) > "$objs/configure.log" 2>&1 || {
            echo "build: nginx configure failed; tail of $objs/configure.log:" >&2
            tail -n 30 "$objs/configure.log" >&2
            exit 1
        }
        printf '%s' "$flags" > "$flags_stamp"
    fi
}

# build ADDON_DIR OBJS MODULE_NAME [STAMP_EXTRA]: configure nginx with one
# dynamic module into OBJS and build it.
build() {
    local addon=$1 objs=$2 name=$3 extra=${4:-}
    local so="$objs/$name.so"

    configure_into "$objs" "$addon" "$extra"
    make -C "$src" -f "$objs/Makefile" -j"$(nproc)" modules
    [ -f "$so" ] || { echo "build: $so was not produced" >&2; exit 1; }
    echo "build: $so"
}

# The nginx binary of another version, in a build directory without the
# module (so changing the module never rebuilds nginx): base/sbin/nginx.
if [ -n "$nginx_src" ]; then
    configure_into "$base/objs-nginx" ""
    make -C "$src" -f "$base/objs-nginx/Makefile" -j"$(nproc)" binary
    if ! cmp -s "$base/objs-nginx/nginx" "$base/sbin/nginx"; then
        mkdir -p "$base/sbin"
        cp -f "$base/objs-nginx/nginx" "$base/sbin/nginx.tmp"
        mv -f "$base/sbin/nginx.tmp" "$base/sbin/nginx"
    fi
    echo "build: $base/sbin/nginx"
fi

build "$repo" "$objs" ngx_http_paygw_module

if [ "$test_module" = 1 ]; then
    # the test module depends on every header of src/ (t/module/config)
    build "$repo/t/module" "$objs-test" ngx_http_paygw_test_module \
        "$(cd "$repo" && echo src/*.h)"
fi
