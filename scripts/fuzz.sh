#!/bin/bash
# make fuzz: build each libFuzzer harness of t/fuzz/ (test-only: the
# module's own .c files with nginx's headers and t/fuzz/shim.c, under
# ASan/UBSan) and run it FUZZ_SECONDS (default 30) on its seed corpus
# t/fuzz/corpus/<name>/ (libFuzzer replays the whole corpus first),
# printing executions and coverage.  A crash fails make; its input is
# left in build/fuzz/<name>/crash-* (copy it to the corpus once fixed).
#
#   FUZZ_SECONDS=60 make fuzz        longer runs
#   FUZZ_ONLY="alipay wechat" make fuzz
#   FUZZ_SECONDS=0 make fuzz         replay the corpora only
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
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
FLAGS="-g -O1 -fno-omit-frame-pointer $SAN"
LINK="-lcrypto -lssl -ljansson -lhiredis -lmariadb -lmsgpackc -lz -lm"

# harness name => the module sources it #includes for their static
# parsers (not linked a second time); every other source is linked whole
declare -A INCLUDES=(
    [utf8]=""
    [auth]="auth"
    [form]=""
    [create]=""
    [alipay]=""
    [wechat]=""
    [bank]=""
    [resp]="redis"
    [conf]=""
)

mkdir -p "$OUT/objs"
status=0

# the module, once: instrumented for coverage, ASan and UBSan
for src in "$REPO"/src/*.c "$REPO"/ngx_http_paygw_module.c; do
    obj=$OUT/objs/$(basename "${src%.c}").o
    if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] \
       || [ -n "$(find "$REPO/src" -name '*.h' -newer "$obj")" ]
    then
        # shellcheck disable=SC2086
        $CC $FLAGS -fsanitize=fuzzer-no-link $INC -c "$src" -o "$obj"
    fi
done

harnesses=${FUZZ_ONLY:-$(printf '%s\n' "${!INCLUDES[@]}" | sort)}

for name in $harnesses; do
    dir=$OUT/$name
    mkdir -p "$dir/corpus"
    cp -n "$REPO/t/fuzz/corpus/$name/"* "$dir/corpus/" 2>/dev/null || true

    objs=
    for obj in "$OUT"/objs/*.o; do
        unit=$(basename "$obj" .o)
        unit=${unit#ngx_http_paygw_}
        case " ${INCLUDES[$name]} " in *" $unit "*) continue ;; esac
        objs="$objs $obj"
    done

    srcs="$REPO/t/fuzz/fuzz_$name.c $REPO/t/fuzz/shim.c"

    # nginx itself is not linked (Debian ships its headers only): what the
    # fuzzed paths call of it is in shim.c; any other symbol (the event
    # loop, upstreams, the conf parser) gets an inert stand-in in
    # build/fuzz/*/stubs.c, which faults if it is ever reached.
    : > "$dir/stubs.c"
    # shellcheck disable=SC2086
    if ! $CC $FLAGS -fsanitize=fuzzer $INC -o "$dir/fuzz_$name" $srcs $objs \
           "$dir/stubs.c" $LINK 2> "$dir/link.log"
    then
        if grep -Eq "\.[ch]:[0-9]+:[0-9]+: error:" "$dir/link.log"; then
            cat "$dir/link.log" >&2
            exit 1
        fi
        grep -o "undefined reference to \`[A-Za-z_0-9]*'" "$dir/link.log" \
            | sed "s/.*\`\(.*\)'/\1/" | sort -u \
            | sed 's/.*/char & [512] __attribute__((aligned(64)));/' \
            > "$dir/stubs.c"
        # shellcheck disable=SC2086
        $CC $FLAGS -fsanitize=fuzzer $INC -o "$dir/fuzz_$name" $srcs $objs \
            "$dir/stubs.c" $LINK
    fi

    echo "fuzz: $name for ${SECONDS_EACH}s"
    if [ "$SECONDS_EACH" = 0 ]; then
        run="-runs=0"
    else
        run="-max_total_time=$SECONDS_EACH"
    fi
    # tokens of the format, where there is a dictionary
    dict=
    if [ -f "$REPO/t/fuzz/$name.dict" ]; then
        dict="-dict=$REPO/t/fuzz/$name.dict"
    fi
    # shellcheck disable=SC2086
    if ! (cd "$dir" && ./"fuzz_$name" $run $dict -print_final_stats=1 \
            -timeout=10 -rss_limit_mb=2048 corpus > run.log 2>&1); then
        status=1
        echo "fuzz: $name FOUND A CRASH (build/fuzz/$name/run.log)"
        grep -m3 "ERROR: \|runtime error\|SUMMARY" "$dir/run.log" || true
    fi

    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$dir/run.log" \
            | grep -o '[0-9]*$' || echo '?')
    cov=$(grep -o 'cov: [0-9]*' "$dir/run.log" | tail -1 || echo 'cov: ?')
    ft=$(grep -o 'ft: [0-9]*' "$dir/run.log" | tail -1 || echo 'ft: ?')
    printf 'fuzz: %-8s %ss executions %s, cov %s edges, ft %s features, corpus %s\n' \
           "$name" "$SECONDS_EACH" "$execs" "${cov#cov: }" "${ft#ft: }" \
           "$(find "$dir/corpus" -type f | wc -l)"
done

exit $status
