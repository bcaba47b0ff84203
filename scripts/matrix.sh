#!/usr/bin/env bash
# The nginx version matrix (`make matrix`): for every supported nginx
# version, build that nginx and the module (and the test-only module) for
# it, run the black-box API tests against it, and print a summary table.
#
#   NGINX_SRC_DIR    where nginx-VERSION.tar.gz (or an nginx-VERSION/ tree)
#                    of each version is; no default. Versions whose sources
#                    are not there are reported as skipped.
#   MATRIX_VERSIONS  default: 1.22.1 1.24.0 1.26.3 1.27.1 1.30.4 1.31.4.
#                    1.22.1 is Debian's nginx (/usr/sbin/nginx, nginx-dev),
#                    unless NGINX_SRC_DIR has its sources.
#   MATRIX_TESTS     the test files, default: the black-box API tests
#                    below.
#   MATRIX_JOBS      test files run in parallel per version (default 2).
#
# After the tests of a version, t/post/log-scan.t searches every log they
# wrote for secrets (VERSION.test-logs/), as `make test` does.
#
# Logs: build/matrix/VERSION.build.log, VERSION.test.log; the table also
# goes to build/matrix/summary.txt. Builds are cached under
# build/nginx-VERSION/ (scripts/build.sh), so a second run only tests.
# Exits 1 if any build or test failed; skipped versions are not failures.
set -uo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
# the test module is the one beside each version's module (Test.pm)
unset PAYGW_TEST_MODULE PAYGW_ASAN

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo" || exit 1

versions=${MATRIX_VERSIONS:-1.22.1 1.24.0 1.26.3 1.27.1 1.30.4 1.31.4}
tests=${MATRIX_TESTS:-t/10-redis.t t/20-mysql.t t/30-health.t t/60-auth.t
    t/61-validation.t t/62-idempotency.t t/63-payments.t t/64-faults.t
    t/65-refunds.t t/75-alipay.t t/76-wechat.t t/79-provider-tls.t
    t/83-webhooks-keepalive.t t/90-hostile.t}
jobs=${MATRIX_JOBS:-2}
src_dir=${NGINX_SRC_DIR:-}
debian_version=$(nginx -v 2>&1 | sed 's/.*\///')
out="$repo/build/matrix"
mkdir -p "$out"

# only the files that exist (a branch may not have all of them yet)
files=()
for t in $tests; do
    [ -f "$t" ] && files+=("$t")
done

secs() { echo $(( $(date +%s) - $1 )); }

# run_tests LOG FILE...: TAP::Harness over the files into LOG, whose last
# line is "MATRIX-RESULT files_ok files tests_passed tests"
run_tests() {
    local log=$1; shift
    perl -I t/lib -MTAP::Harness -e '
        my $h = TAP::Harness->new({lib => ["t/lib"], jobs => shift @ARGV,
                                   verbosity => 0, timer => 1});
        my $a = $h->runtests(@ARGV);
        my @p = map { $a->parsers($_) } $a->descriptions;
        my $files_ok = grep { !$_->has_problems } @p;
        printf "MATRIX-RESULT %d %d %d %d\n", $files_ok, scalar @p,
            scalar $a->passed, scalar $a->total;
        exit($a->all_passed ? 0 : 1);
    ' "$jobs" "$@" > "$log" 2>&1
}

rows=()
fail=0
t_all=$(date +%s)

if [ -z "$src_dir" ]; then
    echo "matrix: NGINX_SRC_DIR is not set: only Debian's nginx $debian_version" \
         "is tested; the other versions are skipped"
elif [ ! -d "$src_dir" ]; then
    echo "matrix: NGINX_SRC_DIR=$src_dir is not a directory: only Debian's" \
         "nginx $debian_version is tested; the other versions are skipped"
    src_dir=
fi

for v in $versions; do
    src=
    if [ -n "$src_dir" ]; then
        if [ -f "$src_dir/nginx-$v.tar.gz" ]; then src="$src_dir/nginx-$v.tar.gz"
        elif [ -d "$src_dir/nginx-$v" ]; then src="$src_dir/nginx-$v"
        fi
    fi
    if [ -z "$src" ] && [ "$v" != "$debian_version" ]; then
        echo "matrix: nginx $v: no sources (nginx-$v.tar.gz in NGINX_SRC_DIR): skipped"
        rows+=("$v|no sources|skipped|-|-|-|-")
        continue
    fi

    echo "matrix: nginx $v: building ${src:-(Debian, nginx-dev)}"
    t0=$(date +%s)
    if [ -n "$src" ]; then
        what=$(basename "$src")
        base=$(bash scripts/build.sh --nginx-src="$src" --where)
        bash scripts/build.sh --nginx-src="$src" --test > "$out/$v.build.log" 2>&1
        brc=$?
        ngx="$base/sbin/nginx"
        module="$base/objs/ngx_http_paygw_module.so"
    else
        what="Debian $(dpkg-query -W -f='${Version}' nginx 2>/dev/null || echo nginx)"
        bash scripts/build.sh --test > "$out/$v.build.log" 2>&1
        brc=$?
        ngx=$(command -v nginx)
        module="$repo/build/objs/ngx_http_paygw_module.so"
    fi
    bt=$(secs "$t0")
    if [ "$brc" != 0 ]; then
        echo "matrix: nginx $v: BUILD FAILED; tail of build/matrix/$v.build.log:"
        tail -n 20 "$out/$v.build.log" | sed 's/^/    /'
        rows+=("$v|$what|FAILED|${bt}s|-|-|-")
        fail=1
        continue
    fi
    built=$("$ngx" -v 2>&1 | sed 's/.*\///')
    if [ "$built" != "$v" ]; then
        echo "matrix: nginx $v: $ngx says it is $built"
        rows+=("$v|$what|FAILED (binary is $built)|${bt}s|-|-|-")
        fail=1
        continue
    fi

    echo "matrix: nginx $v: running ${#files[@]} test files"
    t0=$(date +%s)
    rm -rf "$out/$v.test-logs"
    PAYGW_NGINX="$ngx" PAYGW_MODULE="$module" \
        PAYGW_LOG_ARCHIVE="$out/$v.test-logs" \
        run_tests "$out/$v.test.log" "${files[@]}"
    trc=$?
    read -r _ fok fn tok tn < <(grep '^MATRIX-RESULT ' "$out/$v.test.log" | tail -n1) || true
    if [ -z "${tn:-}" ]; then fok=0; fn=${#files[@]}; tok=0; tn='?'; trc=1; fi
    # then every log those tests wrote is searched for secrets, as after
    # make test
    PAYGW_LOG_ARCHIVE="$out/$v.test-logs" run_tests "$out/$v.post.log" t/post/log-scan.t
    prc=$?
    read -r _ pfok pfn ptok ptn < <(grep '^MATRIX-RESULT ' "$out/$v.post.log" | tail -n1) || true
    if [ -z "${ptn:-}" ]; then pfok=0; pfn=1; ptok=0; ptn=0; prc=1; fi
    fok=$((fok + pfok)); fn=$((fn + pfn)); tok=$((tok + ptok))
    [ "$tn" = '?' ] || tn=$((tn + ptn))
    [ "$prc" = 0 ] || { trc=1; cat "$out/$v.post.log" >> "$out/$v.test.log"; }
    tt=$(secs "$t0")
    if [ "$trc" != 0 ]; then
        fail=1
        echo "matrix: nginx $v: TESTS FAILED; see build/matrix/$v.test.log:"
        grep -E '^(t/.*(Failed|Dubious)|Failed test|  Failed|not ok)' "$out/$v.test.log" \
            | head -n 20 | sed 's/^/    /'
        status=FAILED
    else
        status=ok
    fi
    rows+=("$v|$what|ok|${bt}s|$fok/$fn|$tok/$tn $status|${tt}s")
    unset fok fn tok tn pfok pfn ptok ptn
done

total=$(secs "$t_all")
{
    echo
    echo "nginx version matrix ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores)"
    echo
    fmt='| %-7s | %-26s | %-10s | %-10s | %-10s | %-19s | %-9s |\n'
    # shellcheck disable=SC2059
    printf "$fmt" version source build "build time" "test files" "tests passed" "test time"
    # shellcheck disable=SC2059
    printf "$fmt" ------- -------------------------- ---------- ---------- ---------- \
        ------------------- ---------
    for r in "${rows[@]}"; do
        IFS='|' read -r a b c d e f g <<<"$r"
        # shellcheck disable=SC2059
        printf "$fmt" "$a" "$b" "$c" "$d" "$e" "$f" "$g"
    done
    echo
    echo "test files: ${files[*]} t/post/log-scan.t"
    echo "wall time: ${total}s"
} | tee "$out/summary.txt"

exit "$fail"
