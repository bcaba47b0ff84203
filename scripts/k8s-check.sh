#!/usr/bin/env bash
# make k8s-check: offline checks of k8s-ingress/ (and docker/).
#
#  1. yamllint over every YAML file of k8s-ingress/ and docker/ (compose)
#  2. k8s-ingress/tools/check.mjs (npm ci from the pinned lockfile): renders
#     every overlay, validates each object against the Kubernetes schemas,
#     rejects unknown fields, checks copies against each other and the
#     metric names of alerts and dashboard (against a live /metrics when
#     a gateway answers on PAYGW_PORT, else against the metrics source);
#     docker/Dockerfile* through dockerfile-utils' validator; the alert
#     rules through promtool (Debian's prometheus package): `check rules`
#     and the unit tests of k8s-ingress/monitoring/tests/rules-test.yaml
#  3. where kubectl exists: `kubectl kustomize` of every overlay must give
#     the same objects as check.mjs's renderer
#  4. nginx -t, with the module (build/objs), of every nginx configuration
#     a ConfigMap carries: the plain-nginx template rendered with its
#     paygw-env values, the ingress-nginx main-snippet + http-snippet.
#     Substituted in a temporary directory: paths under /etc/paygw, /tmp
#     and the module path; host names of upstream servers by 127.0.0.1
#     (nginx -t resolves them); secrets by test keys. And the minimal
#     nginx.conf of docs/deploy.md.
#  5. a real run, where podman and the image paygw:dev exist (make image):
#     `podman kube play` of the podman-local overlay (the plain Deployment,
#     its ConfigMaps, the secrets as test keys, host network) against the
#     `make run` backends; /readyz, one payment with a notify_url whose
#     payment.succeeded webhook a receiver on loopback (port
#     PAYGW_K8S_HOOK_PORT, 8096) gets and verifies, reconcile.py (the
#     CronJob's script) against the pod, /metrics names, no error in the
#     pod's error log; then `podman kube down`. PAYGW_K8S_REAL_RUN=0
#     skips it.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
out=$repo/build/k8s-check
tools=$repo/k8s-ingress/tools
module=$repo/build/objs/ngx_http_paygw_module.so
t0=$(date +%s)
failed=0
say() { printf 'k8s-check: [%3ss] %s\n' "$(( $(date +%s) - t0 ))" "$*"; }
bad() { echo "k8s-check: FAIL $*"; failed=1; }
die() { echo "k8s-check: $*" >&2; exit 1; }

installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}
apt_install() {
    local missing=() p saved="" policy=/usr/sbin/policy-rc.d
    for p in "$@"; do installed "$p" || missing+=("$p"); done
    [ "${#missing[@]}" -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "need root to install: ${missing[*]}"
    say "installing ${missing[*]} (apt-get)"
    # no service may start (prometheus would): as scripts/deps.sh does
    if [ -e "$policy" ]; then saved=$(mktemp); cp -a "$policy" "$saved"; fi
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "${missing[@]}" > /dev/null || true
    if [ -n "$saved" ]; then mv -f "$saved" "$policy"; else rm -f "$policy"; fi
    for p in "${missing[@]}"; do installed "$p" || die "$p did not install"; done
}

rm -rf "$out"
mkdir -p "$out"

# ---- 1. yamllint ----------------------------------------------------------
apt_install yamllint
mapfile -t yamls < <(find k8s-ingress docker -path '*/node_modules' -prune -o \
                     \( -name '*.yaml' -o -name '*.yml' \) -print | sort)
if yamllint -s -c k8s-ingress/.yamllint "${yamls[@]}"; then
    say "yamllint: ${#yamls[@]} files clean"
else
    bad "yamllint"
fi

# ---- 2. render, schemas, unknown fields, copies, metric names ------------
command -v node >/dev/null 2>&1 || apt_install nodejs npm
if [ ! -d "$tools/node_modules" ] \
   || [ "$tools/package-lock.json" -nt "$tools/node_modules/.package-lock.json" ]; then
    say "npm ci (k8s-ingress/tools, pinned in package-lock.json)"
    (cd "$tools" && npm ci --no-audit --no-fund --loglevel=error > /dev/null)
fi
metrics_arg=()
port=${PAYGW_PORT:-8080}
if curl -sf -o "$out/metrics.txt" "http://127.0.0.1:$port/metrics"; then
    say "metric names from the running gateway's /metrics (127.0.0.1:$port)"
    metrics_arg=("$out/metrics.txt")
fi
node "$tools/check.mjs" "$out" "${metrics_arg[@]}" || bad "check.mjs"
echo "Dockerfiles (no hadolint or BuildKit here: dockerfile-utils' validator)"
node "$tools/lint-dockerfile.mjs" docker/Dockerfile docker/Dockerfile.ingress-nginx \
    || bad "Dockerfile lint"

# ---- the alert rules: promtool (PromQL syntax, and unit tests) -----------
apt_install prometheus          # for promtool; its service is not started
node -e '
    const fs = require("fs"), YAML = require(process.argv[1] + "/node_modules/yaml");
    const docs = YAML.parseAllDocuments(fs.readFileSync(process.argv[2], "utf8"),
                                        { version: "1.1" }).map((d) => d.toJSON());
    const r = docs.find((o) => o.kind === "PrometheusRule");
    fs.writeFileSync(process.argv[3], YAML.stringify({ groups: r.spec.groups }));
' "$tools" "$out/plain.yaml" "$out/paygw-rules.yaml"
cp k8s-ingress/monitoring/tests/rules-test.yaml "$out/"
if (cd "$out" && promtool check rules paygw-rules.yaml > promtool.log 2>&1 \
        && promtool test rules rules-test.yaml >> promtool.log 2>&1); then
    say "promtool: $(grep -o '[0-9]* rules found' "$out/promtool.log"), unit tests of the alerts pass"
else
    bad "promtool: $(tail -n 15 "$out/promtool.log")"
fi

# ---- 3. the same objects as kubectl kustomize ----------------------------
if command -v kubectl >/dev/null 2>&1; then
    for d in k8s-ingress/overlays/*/; do
        o=$(basename "$d")
        if ! kubectl kustomize "$d" > "$out/$o.kubectl.yaml" 2> "$out/$o.kubectl.err"; then
            bad "kubectl kustomize $d: $(head -n3 "$out/$o.kubectl.err")"
            continue
        fi
        if r=$(node "$tools/compare.mjs" "$out/$o.yaml" "$out/$o.kubectl.yaml"); then
            say "kubectl kustomize $o: $r to check.mjs's rendering"
        else
            bad "kubectl kustomize $o differs from check.mjs's rendering: $r"
        fi
    done
else
    say "kubectl not found: check.mjs's renderer only (no cross-check)"
fi

# ---- 4. nginx -t of every ConfigMap-carried nginx.conf -------------------
[ -f "$module" ] || die "$module is missing: make build"
tmp=$out/nginx-t
mkdir -p "$tmp/etc/paygw/secrets" "$tmp/tmp" "$tmp/keys"
bash scripts/provider-keys.sh "$tmp/keys" > /dev/null
sec=$tmp/etc/paygw/secrets
cp conf/demo/keys.conf conf/demo/acquirer.secret conf/demo/webhook_secrets.conf "$sec/"
head -c 24 /dev/urandom | base64 > "$sec/mysql.pass"
for f in alipay_app_private.pem alipay_public.pem wechat_merchant_private.pem \
         wechat_apiv3.key; do
    cp "$tmp/keys/$f" "$sec/$f"
done
cp "$tmp/keys/wechat_platform1_public.pem" "$sec/wechat_platform_public.pem"
cp k8s-ingress/plain-nginx/policy.conf "$tmp/etc/paygw/policy.conf"

# localize FILE: the paths and host names of the cluster, made local.
localize() {
    sed -e "s|/usr/lib/nginx/modules/ngx_http_paygw_module.so|$module|" \
        -e "s|/etc/nginx/modules/ngx_http_paygw_module.so|$module|" \
        -e "s|/etc/paygw/|$tmp/etc/paygw/|g" \
        -e "s|/tmp/nginx/|$tmp/tmp/|g" \
        "$1" \
    | sed -E 's/((^|[{;])[[:space:]]*server[[:space:]]+)[a-z][a-z0-9.-]*:([0-9]+);/\1127.0.0.1:\3;/g'
}

nginx_t() {     # NAME CONF
    local log=${2%.conf}.nginx-t.log
    if nginx -t -q -p "$tmp/" -c "$2" -e stderr -g "pid $tmp/nginx.pid;" \
            > "$log" 2>&1 \
       || nginx -t -q -p "$tmp/" -c "$2" -e stderr > "$log" 2>&1; then
        say "nginx -t: $1 passes with the module"
    else
        bad "nginx -t: $1: $(tail -n3 "$log")"
    fi
}

shopt -s nullglob
for tpl in "$out"/nginx/*.template; do
    name=$(basename "$tpl" .template)
    env=${tpl%.template}.env
    # the entrypoint's rendering, with the pod's environment; hosts local
    (
        # a kustomize env file, not shell: KEY=everything after the first =
        # (PAYGW_WEBHOOK_RETRY has spaces)
        while IFS= read -r kv || [ -n "$kv" ]; do
            [ -n "$kv" ] && [ "${kv#\#}" = "$kv" ] && export "${kv%%=*}=${kv#*=}"
        done < "$env"
        set -a
        PAYGW_RESOLVER=127.0.0.1
        PAYGW_REDIS=127.0.0.1:${PAYGW_REDIS##*:}
        PAYGW_MYSQL_HOST=127.0.0.1
        PAYGW_BANK_SERVER=127.0.0.1:${PAYGW_BANK_SERVER##*:}
        PAYGW_ALIPAY_SERVER=127.0.0.1:${PAYGW_ALIPAY_SERVER##*:}
        PAYGW_WECHAT_SERVER=127.0.0.1:${PAYGW_WECHAT_SERVER##*:}
        localize "$tpl" > "$tpl.local"
        bash docker/entrypoint.sh render-file "$tpl.local" > "$out/nginx/$name.conf"
    ) || { bad "rendering $name"; continue; }
    # a pid directive is in the template: point it into $tmp
    sed -i "s|^pid .*|pid $tmp/nginx.pid;|" "$out/nginx/$name.conf"
    nginx_t "$name" "$out/nginx/$name.conf"
done
for snip in "$out"/nginx/*.snippet.conf; do
    name=$(basename "$snip" .snippet.conf)
    localize "$snip" > "$out/nginx/$name.conf"
    nginx_t "$name (main-snippet + http-snippet)" "$out/nginx/$name.conf"
done
shopt -u nullglob
# the minimal nginx.conf of docs/deploy.md, which operators copy
awk '/^```nginx/ { f = 1; next } /^```/ { f = 0 } f' docs/deploy.md \
    > "$out/nginx/docs-deploy-minimal.in"
localize "$out/nginx/docs-deploy-minimal.in" > "$out/nginx/docs-deploy-minimal.conf"
nginx_t "docs/deploy.md's minimal nginx.conf" "$out/nginx/docs-deploy-minimal.conf"

# ---- 5. a real run: podman kube play -------------------------------------
real_run() {
    local yaml=$out/podman-local.play.yaml pod started=0 code i mport=8089 \
          hport=${PAYGW_K8S_HOOK_PORT:-8096} rpid
    if ! command -v podman >/dev/null 2>&1 \
       || ! podman image exists localhost/paygw:dev 2>/dev/null; then
        say "real run skipped: no podman or no image paygw:dev (make image)"
        return 0
    fi
    apt_install runc catatonit      # catatonit: the pod's local pause image
    # podman 4.3 here: runc (crun fails on setrlimit) and lowered rlimits;
    # kube play takes no --ulimit, so they go in a containers.conf.
    printf '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n[engine]\nruntime = "runc"\n' \
        > "$out/containers.conf"
    export CONTAINERS_CONF=$out/containers.conf
    if ! { (exec 3<>/dev/tcp/127.0.0.1/6390) && (exec 3<>/dev/tcp/127.0.0.1/3316) \
           && (exec 3<>/dev/tcp/127.0.0.1/8091); } 2>/dev/null \
       || [ ! -s run/mysql.pass ]; then
        say "real run: starting the stack (make run) for its backends"
        make -s run > "$out/stack.log" 2>&1 || { bad "make run"; return 0; }
        started=1
    fi
    # The Deployment and its ConfigMaps from the rendered overlay, the
    # WeChat serials of run/keys, and a Secret of the stack's test keys.
    node -e '
        const fs = require("fs"), YAML = require(process.argv[1] + "/node_modules/yaml");
        const docs = YAML.parseAllDocuments(fs.readFileSync(process.argv[2], "utf8"),
                                            { version: "1.1" }).map((d) => d.toJSON());
        const keep = docs.filter((o) => o.kind === "Deployment" || o.kind === "ConfigMap");
        for (const o of keep) {
            if (o.kind === "ConfigMap" && o.data.PAYGW_LISTEN) {
                o.data.PAYGW_WECHAT_MERCHANT_SERIAL = process.argv[3];
                o.data.PAYGW_WECHAT_PLATFORM_SERIAL = process.argv[4];
            }
        }
        // /etc/paygw as the projected volume would hold it: the ConfigMap
        // paygw-config and the Secret paygw-secrets (test keys) under secrets/.
        const dir = process.argv[6];
        fs.mkdirSync(dir + "/secrets", { recursive: true });
        for (const [k, f] of JSON.parse(process.argv[5]))
            fs.writeFileSync(dir + "/secrets/" + k, fs.readFileSync(f), { mode: 0o440 });
        for (const o of keep) {
            // podman 4.3 turns containerPorts into port mappings, which it
            // refuses on the host network: drop them, probes by number.
            for (const c of o.spec?.template?.spec?.containers || []) {
                const num = Object.fromEntries((c.ports || []).map((p) => [p.name, p.containerPort]));
                delete c.ports;
                for (const pr of [c.readinessProbe, c.livenessProbe, c.startupProbe])
                    if (pr?.httpGet && num[pr.httpGet.port]) pr.httpGet.port = num[pr.httpGet.port];
            }
            // podman 4.3 has no projected volumes (and panics on Secret
            // volumes): the same files, from a hostPath.
            for (const v of o.spec?.template?.spec?.volumes || []) {
                if (!v.projected) continue;
                for (const src of v.projected.sources) {
                    if (!src.configMap) continue;
                    const cm = keep.find((x) => x.kind === "ConfigMap" && x.metadata.name === src.configMap.name);
                    for (const [k, val] of Object.entries(cm.data))
                        fs.writeFileSync(dir + "/" + k, val, { mode: 0o440 });
                }
                delete v.projected;
                v.hostPath = { path: dir, type: "Directory" };
            }
        }
        process.stdout.write(keep.map((o) => YAML.stringify(o, { version: "1.1" })).join("---\n"));
    ' "$tools" "$out/podman-local.yaml" \
        "$(head -n1 run/keys/wechat_merchant_serial)" \
        "$(head -n1 run/keys/wechat_platform1_serial)" \
        "$(printf '[["keys.conf","conf/demo/keys.conf"],["acquirer.secret","conf/demo/acquirer.secret"],["mysql.pass","run/mysql.pass"],["alipay_app_private.pem","run/keys/alipay_app_private.pem"],["alipay_public.pem","run/keys/alipay_public.pem"],["wechat_merchant_private.pem","run/keys/wechat_merchant_private.pem"],["wechat_apiv3.key","run/keys/wechat_apiv3.key"],["wechat_platform_public.pem","run/keys/wechat_platform1_public.pem"],["webhook_secrets.conf","conf/demo/webhook_secrets.conf"]]')" \
        "$out/podman-local.etc" > "$yaml"
    # owned by the pod's user, as fsGroup would make them
    chown -R 10001:10001 "$out/podman-local.etc"
    chmod 0550 "$out/podman-local.etc" "$out/podman-local.etc/secrets"
    podman kube down "$yaml" > /dev/null 2>&1 || true
    if ! podman kube play "$yaml" > "$out/kube-play.log" 2>&1; then
        bad "podman kube play: $(grep -m3 -i 'error\|panic' "$out/kube-play.log")"
        podman kube down "$yaml" > /dev/null 2>&1 || true
        [ "$started" = 1 ] && bash scripts/stack.sh stop > /dev/null
        return 0
    fi
    pod=$(podman pod ps --format '{{.Name}}' --filter name=paygw | head -n1)
    say "real run: podman kube play started pod $pod (Deployment paygw, its ConfigMaps, test secrets; host network)"
    code=000
    for ((i = 0; i < 150; i++)); do
        code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$mport/readyz" || true)
        [ "$code" = 200 ] && break
        sleep 0.2
    done
    if [ "$code" = 200 ]; then
        say "real run: GET /readyz on the pod: 200"
        local body cmd reply pno hook
        # a merchant's webhook receiver on loopback: records each POST and
        # whether its webhook-signature verifies with M100's secret
        node -e '
            const http = require("http"), crypto = require("crypto"), fs = require("fs");
            const [port, secret, out] = process.argv.slice(1);
            const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
            http.createServer((req, res) => {
                const parts = [];
                req.on("data", (c) => parts.push(c));
                req.on("end", () => {
                    const body = Buffer.concat(parts).toString();
                    const id = req.headers["webhook-id"], ts = req.headers["webhook-timestamp"];
                    const want = "v1," + crypto.createHmac("sha256", key)
                        .update(`${id}.${ts}.${body}`).digest("base64");
                    const sigs = (req.headers["webhook-signature"] || "").split(" ");
                    let type = null;
                    try { type = JSON.parse(body).type; } catch (e) { /* recorded as null */ }
                    fs.appendFileSync(out, JSON.stringify({ id, type, valid: sigs.includes(want), body }) + "\n");
                    res.writeHead(204);
                    res.end();
                });
            }).listen(+port, "127.0.0.1");
        ' "$hport" "$(awk '$1 == "M100" { print $2 }' conf/demo/webhook_secrets.conf)" \
            "$out/webhooks.jsonl" > "$out/receiver.log" 2>&1 &
        rpid=$!
        for ((i = 0; i < 50; i++)); do
            (exec 3<>"/dev/tcp/127.0.0.1/$hport") 2>/dev/null && break
            sleep 0.1
        done
        body="{\"business_no\":\"K8S-$(date +%s)-$$\",\"amount\":1999,\"currency\":\"CNY\",\"channel\":\"bank_card\",\"subject\":\"kube play\",\"notify_url\":\"http://127.0.0.1:$hport/paygw-hook\",\"card\":{\"number\":\"4242424242424242\",\"exp_month\":12,\"exp_year\":2030,\"cvc\":\"123\"}}"
        cmd=$(PAYGW_PORT=$mport scripts/paygw-curl --print POST /v1/payments "$body")
        reply=$(eval "$cmd -w '\n%{http_code}'" 2>&1) || true
        pno=$(grep -o '"payment_no":"[^"]*"' <<<"$reply" | head -n1 | cut -d'"' -f4 || true)
        if [ "$(tail -n1 <<<"$reply")" = 201 ] && grep -q '"status":"succeeded"' <<<"$reply"; then
            say "real run: POST /v1/payments through the pod: 201 $pno"
        else
            bad "real run: payment: $reply"
        fi
        # its payment.succeeded webhook, signed with the Secret's whsec_
        hook=""
        for ((i = 0; i < 100 && ${#pno} > 0; i++)); do
            hook=$(grep -F "$pno" "$out/webhooks.jsonl" 2>/dev/null | head -n1 || true)
            [ -n "$hook" ] && break
            sleep 0.1
        done
        if [ -n "$hook" ] && grep -q '"type":"payment.succeeded"' <<<"$hook" \
           && grep -q '"valid":true' <<<"$hook"; then
            say "real run: webhook payment.succeeded for $pno delivered to the receiver, signature valid ($(grep -o '"id":"[^"]*"' <<<"$hook"))"
        else
            bad "real run: no valid payment.succeeded webhook for $pno: ${hook:-nothing received} $(tail -c 300 "$out/receiver.log" 2>/dev/null)"
        fi
        kill "$rpid" 2>/dev/null || true
        wait "$rpid" 2>/dev/null || true
        # the CronJob's script, the alternative to the in-nginx schedule,
        # against the pod: a completed report per channel (yesterday)
        if command -v python3 >/dev/null 2>&1; then
            if PAYGW_URL=http://127.0.0.1:$mport PAYGW_KEY_ID=ops PAYGW_SECRET=ops-secret \
                    python3 k8s-ingress/plain-nginx/reconcile.py > "$out/reconcile.log" 2>&1; then
                say "real run: reconcile.py: POST /v1/reconciliations completed for $(grep -c '"status":"completed"' "$out/reconcile.log") channels"
            else
                bad "real run: reconcile.py: $(cut -c1-200 "$out/reconcile.log")"
            fi
        else
            say "real run: no python3: reconcile.py not run"
        fi
        curl -s "http://127.0.0.1:$mport/metrics" > "$out/metrics.pod.txt"
        if node "$tools/check.mjs" "$out/recheck" "$out/metrics.pod.txt" \
                > "$out/recheck.log" 2>&1; then
            say "real run: every metric of the alerts and dashboard is in the pod's /metrics"
        else
            bad "real run: metric names against the pod's /metrics: $(grep FAIL "$out/recheck.log" | head -n3)"
        fi
    else
        bad "real run: /readyz answered $code; $(podman pod logs "$pod" 2>&1 | tail -n5)"
    fi
    # nginx's error log (the container's stderr): nothing at error or
    # worse, with the webhook ticker and the reconciliation schedule on
    podman pod logs "$pod" > "$out/pod.log" 2>&1 || true
    if grep -E '\[(emerg|alert|crit|error)\]' "$out/pod.log" > "$out/pod-errors.log"; then
        bad "real run: the pod's error log: $(head -n3 "$out/pod-errors.log")"
    else
        say "real run: the pod's error log has no error, crit, alert or emerg line"
    fi
    podman kube down "$yaml" > /dev/null 2>&1 || true
    say "real run: podman kube down"
    if [ "$started" = 1 ]; then
        bash scripts/stack.sh stop > /dev/null
        say "real run: stopped the stack it started"
    fi
}
if [ "${PAYGW_K8S_REAL_RUN:-1}" = 1 ]; then
    real_run
fi

if [ "$failed" = 0 ]; then
    say "all checks passed (outputs in build/k8s-check/)"
else
    say "FAILED (outputs in build/k8s-check/)"
    exit 1
fi
