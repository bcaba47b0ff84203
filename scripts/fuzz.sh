#!/bin/bash
# make fuzz: build each libFuzzer harness of t/fuzz/ (test-only: the
# module's own .c files with nginx's headers and t/fuzz/shim.c, under
# ASan/UBSan) and run it FUZZ_SECONDS (default 30) on its seed corpus
# t/fuzz/corpus/<name>/, printing executions and coverage.  A crash stops
# the run (its input is left in build/fuzz/<name>/crash-*) and fails make.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
SECONDS_EACH=${FUZZ_SECONDS:-30}
OUT=$REPO/build/fuzz
CC=${FUZZ_CC:-clang}

if ! command -v "$CC" >/dev/null \
   || ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a \
        >/dev/null 2>&1
then
    echo "fuzz: installing clang and libclang-rt (libFuzzer)" >&2
    apt-get install -y clang libclang-rt-14-dev >/dev/null
fi

[ -f "$REPO/build/objs/ngx_auto_config.h" ] || bash "$REPO/scripts/build.sh"

NGX=$REPO/build/nginx-src/src
INC="-I $NGX/core -I $NGX/event -I $NGX/event/modules -I $NGX/os/unix
     -I $REPO/build/objs -I $NGX/http -I $NGX/http/modules -I $NGX/http/v2
     -I $REPO/src -I $REPO/t/fuzz -I /usr/include/hiredis
     -I /usr/include/mariadb"
FLAGS="-g -O1 -fsanitize=fuzzer,address,undefined
       -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
LINK="-lcrypto -ljansson"

# harness name => the module sources it exercises
declare -A UNITS=(
    [utf8]="src/ngx_http_paygw_utf8.c"
    [auth]=""
    [form]="src/ngx_http_paygw_form.c"
)

mkdir -p "$OUT"
status=0

for name in $(printf '%s\n' "${!UNITS[@]}" | sort); do
    dir=$OUT/$name
    mkdir -p "$dir/corpus"
    cp -n "$REPO/t/fuzz/corpus/$name/"* "$dir/corpus/" 2>/dev/null || true

    srcs="$REPO/t/fuzz/fuzz_$name.c $REPO/t/fuzz/shim.c"
    for u in ${UNITS[$name]}; do srcs="$srcs $REPO/$u"; done

    # A harness that includes a module source for its static parser
    # leaves the rest of nginx unresolved; the fuzzed paths never call
    # it, so each such symbol gets an inert stand-in (build/fuzz/*/stubs.c).
    : > "$dir/stubs.c"
    # shellcheck disable=SC2086
    if ! $CC $FLAGS $INC -o "$dir/fuzz_$name" $srcs "$dir/stubs.c" $LINK \
           2> "$dir/link.log"
    then
        grep -o "undefined reference to \`[A-Za-z_0-9]*'" "$dir/link.log" \
            | sed "s/.*\`\(.*\)'/\1/" | sort -u \
            | sed 's/.*/char & [64] __attribute__((aligned(64)));/' \
            > "$dir/stubs.c"
        # shellcheck disable=SC2086
        $CC $FLAGS $INC -o "$dir/fuzz_$name" $srcs "$dir/stubs.c" $LINK
    fi

    echo "fuzz: $name for ${SECONDS_EACH}s"
    if ! (cd "$dir" && ./"fuzz_$name" -max_total_time="$SECONDS_EACH" \
            -print_final_stats=1 corpus > run.log 2>&1); then
        status=1
        echo "fuzz: $name FOUND A CRASH (build/fuzz/$name/run.log)"
    fi

    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$dir/run.log" \
            | grep -o '[0-9]*$' || echo '?')
    cov=$(grep -o 'cov: [0-9]*' "$dir/run.log" | tail -1 || echo 'cov: ?')
    ft=$(grep -o 'ft: [0-9]*' "$dir/run.log" | tail -1 || echo 'ft: ?')
    printf 'fuzz: %-6s executions %s, %s edges, %s features, corpus %s\n' \
           "$name" "$execs" "${cov#cov: }" "${ft#ft: }" \
           "$(ls "$dir/corpus" | wc -l)"
done

exit $status
