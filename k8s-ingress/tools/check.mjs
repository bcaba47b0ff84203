// Offline checks of k8s-ingress/ (run by scripts/k8s-check.sh).
//
//   node check.mjs OUTDIR [METRICS_FILE]
//
// 1. Renders every overlay under ../overlays with a small kustomize of its
//    own (only the features these manifests use; anything else is refused)
//    and writes OUTDIR/<overlay>.yaml. scripts/k8s-check.sh compares that
//    with `kubectl kustomize` where kubectl exists.
// 2. Validates every object against the Kubernetes schemas
//    (kubernetes-models, prometheus-operator models) and rejects fields the
//    schema does not know: the validator is run over a Proxy that records
//    which properties it reads; a property it never read, in an object
//    whose keys it never enumerated (a map), is unknown.
// 3. Checks that copies do not drift: the canary Deployment against the
//    stable one, plain-nginx/nginx.conf.template against
//    docker/nginx.conf.template, the policy copies against each other.
// 4. Checks every metric a PrometheusRule or the dashboard names against
//    METRICS_FILE (a /metrics scrape) or, without it, the metric names in
//    src/ngx_http_paygw_metrics.c.
// 5. Writes the nginx configurations the ConfigMaps carry to
//    OUTDIR/nginx/<overlay>-<name>.conf (+ .env for templates), for
//    `nginx -t` by the shell script.
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import YAML from "yaml";

const here = path.dirname(fileURLToPath(import.meta.url));
const k8sDir = path.resolve(here, "..");
const repo = path.resolve(k8sDir, "..");
const outDir = path.resolve(process.argv[2] || path.join(repo, "build/k8s-check"));
const metricsFile = process.argv[3];

let failures = 0;
const fail = (msg) => { failures++; console.log(`  FAIL ${msg}`); };
const ok = (msg) => console.log(`  ok   ${msg}`);

// ---------------------------------------------------------------- render

const CLUSTER_SCOPED = new Set(["Namespace", "IngressClass", "ClusterRole",
  "ClusterRoleBinding", "CustomResourceDefinition", "PersistentVolume",
  "StorageClass", "PriorityClass"]);
const KNOWN_KUSTOMIZATION_FIELDS = new Set(["apiVersion", "kind", "resources",
  "namespace", "labels", "images", "configMapGenerator", "patches"]);

const readYamlDocs = (file) =>
  YAML.parseAllDocuments(fs.readFileSync(file, "utf8"), { version: "1.1" })
    .map((d) => { if (d.errors.length) throw new Error(`${file}: ${d.errors[0].message}`); return d.toJSON(); })
    .filter((o) => o && typeof o === "object");

const idOf = (o) => `${o.kind}/${o.metadata.namespace || "-"}/${o.metadata.name}`;

// Go's json.Marshal: sorted map keys (we sort), HTML characters escaped.
function goJson(v) {
  if (Array.isArray(v)) return `[${v.map(goJson).join(",")}]`;
  if (v && typeof v === "object") {
    return `{${Object.keys(v).sort().map((k) => `${goJson(k)}:${goJson(v[k])}`).join(",")}}`;
  }
  return JSON.stringify(v).replace(/</g, "\\u003c").replace(/>/g, "\\u003e")
    .replace(/&/g, "\\u0026").replace(/\u2028/g, "\\u2028").replace(/\u2029/g, "\\u2029");
}

// kustomize's name suffix of a generated ConfigMap (api/hasher). Its
// encodeConfigMap looks the name up as the single field "metadata/name",
// which never exists: the name it hashes is always "" (checked against
// kubectl kustomize 5.5).
function configMapHash(cm) {
  const m = { kind: "ConfigMap", name: "", data: cm.data || {} };
  const hex = createHash("sha256").update(goJson(m)).digest("hex");
  const map = { 0: "g", 1: "h", 3: "k", a: "m", e: "t" };
  return [...hex.slice(0, 10)].map((c) => map[c] || c).join("");
}

function generateConfigMap(dir, g) {
  const data = {};
  for (const f of g.files || []) {
    const [key, file] = f.includes("=") ? f.split("=", 2) : [path.basename(f), f];
    data[key] = fs.readFileSync(path.join(dir, file), "utf8");
  }
  for (const e of g.envs || []) {
    for (const line of fs.readFileSync(path.join(dir, e), "utf8").split("\n")) {
      if (!line.trim() || line.startsWith("#")) continue;
      const i = line.indexOf("=");
      data[line.slice(0, i)] = line.slice(i + 1);
    }
  }
  for (const l of g.literals || []) {
    const i = l.indexOf("=");
    data[l.slice(0, i)] = l.slice(i + 1);
  }
  const cm = { apiVersion: "v1", kind: "ConfigMap", metadata: { name: g.name }, data };
  if (g.namespace) cm.metadata.namespace = g.namespace;
  const opts = g.options || {};
  if (opts.labels) cm.metadata.labels = { ...opts.labels };
  cm.__hash = !opts.disableNameSuffixHash;
  return cm;
}

function jsonPointer(p) {
  return p.split("/").slice(1).map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"));
}

function applyJson6902(obj, ops, where) {
  for (const op of ops) {
    const parts = jsonPointer(op.path);
    const last = parts.pop();
    let parent = obj;
    for (const p of parts) {
      parent = parent?.[Array.isArray(parent) ? Number(p) : p];
      if (parent === undefined) throw new Error(`${where}: ${op.path}: no such path`);
    }
    if (op.op === "add") {
      if (Array.isArray(parent)) {
        if (last === "-") parent.push(op.value); else parent.splice(Number(last), 0, op.value);
      } else parent[last] = op.value;
    } else if (op.op === "replace") {
      if (!(last in parent)) throw new Error(`${where}: replace ${op.path}: absent`);
      parent[Array.isArray(parent) ? Number(last) : last] = op.value;
    } else if (op.op === "remove") {
      if (!(last in parent)) throw new Error(`${where}: remove ${op.path}: absent`);
      if (Array.isArray(parent)) parent.splice(Number(last), 1); else delete parent[last];
    } else throw new Error(`${where}: JSON patch op ${op.op} not supported here`);
  }
}

function podSpecs(o) {
  const specs = [];
  if (o.spec?.template?.spec) specs.push(o.spec.template.spec);
  if (o.spec?.jobTemplate?.spec?.template?.spec) specs.push(o.spec.jobTemplate.spec.template.spec);
  return specs;
}

function containersOf(spec) {
  return [...(spec.containers || []), ...(spec.initContainers || [])];
}

function setImages(objs, images) {
  for (const o of objs) {
    for (const spec of podSpecs(o)) {
      for (const c of containersOf(spec)) {
        for (const im of images) {
          const name = c.image.replace(/[:@].*$/, "");
          if (name === im.name) {
            c.image = `${im.newName || im.name}${im.newTag ? `:${im.newTag}` : ""}`;
          }
        }
      }
    }
  }
}

// Returns { objs } of one kustomization. Generated ConfigMaps keep their
// own name (and __hash) until render() has built the whole overlay, so
// that an overlay can merge into a base's generated ConfigMap.
function build(dir) {
  const kfile = path.join(dir, "kustomization.yaml");
  const k = readYamlDocs(kfile)[0];
  for (const key of Object.keys(k)) {
    if (!KNOWN_KUSTOMIZATION_FIELDS.has(key)) {
      throw new Error(`${kfile}: field ${key} is not supported by this renderer`);
    }
  }
  let objs = [];
  for (const r of k.resources || []) {
    const p = path.resolve(dir, r);
    if (fs.statSync(p).isDirectory()) {
      objs.push(...build(p).objs);
    } else {
      if (!p.startsWith(dir + path.sep)) throw new Error(`${kfile}: ${r} is outside the kustomization`);
      objs.push(...readYamlDocs(p));
    }
  }
  const generated = [];
  for (const g of k.configMapGenerator || []) {
    const cm = generateConfigMap(dir, g);
    if (g.behavior === "merge") {
      const target = objs.find((o) => o.kind === "ConfigMap" && o.metadata.name === g.name
        && (o.metadata.namespace || "") === (g.namespace || k.namespace || ""));
      if (!target) throw new Error(`${kfile}: merge into absent ConfigMap ${g.name}`);
      target.data = { ...(target.data || {}), ...cm.data };
      if (cm.__hash === false) target.__hash = false;
      if (cm.metadata.labels) target.metadata.labels = { ...(target.metadata.labels || {}), ...cm.metadata.labels };
    } else {
      generated.push(cm);
    }
  }
  objs.push(...generated);
  if (k.namespace) {
    for (const o of objs) if (!CLUSTER_SCOPED.has(o.kind)) o.metadata.namespace = k.namespace;
  }
  for (const l of k.labels || []) {
    if (l.includeSelectors || l.includeTemplates) throw new Error(`${kfile}: labels with selectors/templates not supported`);
    for (const o of objs) o.metadata.labels = { ...(o.metadata.labels || {}), ...l.pairs };
  }
  for (const p of k.patches || []) {
    const text = p.patch ?? fs.readFileSync(path.join(dir, p.path), "utf8");
    const ops = YAML.parse(text, { version: "1.1" });
    if (!Array.isArray(ops) || !p.target) throw new Error(`${kfile}: only JSON6902 patches with a target are supported`);
    const targets = objs.filter((o) => (!p.target.kind || o.kind === p.target.kind)
      && (!p.target.name || o.metadata.name === p.target.name));
    if (targets.length !== 1) throw new Error(`${kfile}: patch target matches ${targets.length} objects`);
    applyJson6902(targets[0], ops, kfile);
  }
  setImages(objs, k.images || []);
  return { objs };
}

function applyRenames(objs, renames) {
  const rn = (ns, name) => renames.get(`${ns || ""}/${name}`) || name;
  for (const o of objs) {
    const ns = o.metadata.namespace;
    for (const spec of podSpecs(o)) {
      for (const v of spec.volumes || []) {
        if (v.configMap) v.configMap.name = rn(ns, v.configMap.name);
        for (const src of v.projected?.sources || []) {
          if (src.configMap) src.configMap.name = rn(ns, src.configMap.name);
        }
      }
      for (const c of containersOf(spec)) {
        for (const e of c.envFrom || []) if (e.configMapRef) e.configMapRef.name = rn(ns, e.configMapRef.name);
        for (const e of c.env || []) {
          const r = e.valueFrom?.configMapKeyRef;
          if (r) r.name = rn(ns, r.name);
        }
      }
    }
  }
}

function render(overlay) {
  const { objs } = build(overlay);
  // name suffix hashes last, over the final data
  const renames = new Map();
  for (const cm of objs) {
    if (cm.__hash) {
      const newName = `${cm.metadata.name}-${configMapHash(cm)}`;
      renames.set(`${cm.metadata.namespace || ""}/${cm.metadata.name}`, newName);
      cm.metadata.name = newName;
    }
    delete cm.__hash;
  }
  applyRenames(objs, renames);
  const ids = new Set();
  for (const o of objs) {
    const id = idOf(o);
    if (ids.has(id)) throw new Error(`${overlay}: ${id} twice`);
    ids.add(id);
  }
  return objs;
}

// -------------------------------------------------------------- validate

const modelCache = new Map();
async function validatorFor(o) {
  const [group, version] = o.apiVersion.includes("/") ? o.apiVersion.split("/") : [null, o.apiVersion];
  const key = `${o.apiVersion}/${o.kind}`;
  if (modelCache.has(key)) return modelCache.get(key);
  let modFile;
  if (group === "monitoring.coreos.com") {
    modFile = path.join(here, "node_modules/@kubernetes-models/prometheus-operator", group, version, `${o.kind}.js`);
  } else {
    modFile = path.join(here, "node_modules/kubernetes-models", group || "", version, `${o.kind}.js`);
  }
  if (!fs.existsSync(modFile)) { modelCache.set(key, null); return null; }
  const src = fs.readFileSync(modFile, "utf8");
  const m = src.match(/import\{validate\}from"([^"]+)"/);
  if (!m) throw new Error(`${modFile}: no schema import found`);
  const schema = await import(path.resolve(path.dirname(modFile), m[1]));
  modelCache.set(key, schema.validate);
  return schema.validate;
}

// Proxy the object tree; record reads and key enumerations per object.
function traced(root) {
  const reads = new WeakMap();
  const enumerated = new WeakSet();
  const proxies = new WeakMap();
  const wrap = (o) => {
    if (!o || typeof o !== "object") return o;
    if (proxies.has(o)) return proxies.get(o);
    reads.set(o, new Set());
    const p = new Proxy(o, {
      get(t, k, r) {
        if (typeof k === "string") reads.get(t).add(k);
        return wrap(Reflect.get(t, k, r));
      },
      has(t, k) { if (typeof k === "string") reads.get(t).add(k); return Reflect.has(t, k); },
      ownKeys(t) { enumerated.add(t); return Reflect.ownKeys(t); },
    });
    proxies.set(o, p);
    return p;
  };
  return { proxy: wrap(root), reads, enumerated };
}

function unknownFields(root, reads, enumerated) {
  const out = [];
  const walk = (o, p) => {
    if (!o || typeof o !== "object") return;
    if (Array.isArray(o)) { o.forEach((v, i) => walk(v, `${p}/${i}`)); return; }
    const seen = reads.get(o);
    if (!seen) return; // the validator never descended here (e.g. x-preserve-unknown-fields)
    for (const k of Object.keys(o)) {
      if (!enumerated.has(o) && !seen.has(k)) out.push(`${p}/${k}`);
      walk(o[k], `${p}/${k}`);
    }
  };
  walk(root, "");
  return out;
}

async function validate(o, where) {
  const v = await validatorFor(o);
  if (!v) { fail(`${where}: ${idOf(o)}: no schema for ${o.apiVersion} ${o.kind}`); return; }
  const { proxy, reads, enumerated } = traced(o);
  const valid = v(proxy);
  if (!valid) {
    for (const e of v.errors.slice(0, 5)) fail(`${where}: ${idOf(o)}${e.instancePath}: ${e.message || e.keyword} ${JSON.stringify(e.params)}`);
    return;
  }
  const unknown = unknownFields(o, reads, enumerated);
  if (unknown.length) { fail(`${where}: ${idOf(o)}: unknown fields ${unknown.join(", ")}`); return; }
  return true;
}

// ----------------------------------------------------------------- checks

function metricNamesExported() {
  if (metricsFile) {
    const names = new Set();
    for (const line of fs.readFileSync(metricsFile, "utf8").split("\n")) {
      const m = line.match(/^# TYPE (\S+) (\S+)/);
      if (m) names.add(m[1]);
      if (m && m[2] === "histogram") for (const s of ["_bucket", "_sum", "_count"]) names.add(m[1] + s);
    }
    return { names, from: metricsFile };
  }
  const src = fs.readFileSync(path.join(repo, "src/ngx_http_paygw_metrics.c"), "utf8");
  const names = new Set();
  for (const m of src.matchAll(/ngx_paygw_head\("(paygw_[a-z_]+)", "([a-z]+)"/g)) {
    names.add(m[1]);
    if (m[2] === "histogram") for (const s of ["_bucket", "_sum", "_count"]) names.add(m[1] + s);
  }
  return { names, from: "src/ngx_http_paygw_metrics.c" };
}

function checkMetrics(objs, exported, where) {
  const used = new Map();
  const note = (expr, src) => {
    for (const m of expr.matchAll(/\b(paygw_[a-z_]+)\b/g)) {
      if (!used.has(m[1])) used.set(m[1], src);
    }
  };
  for (const o of objs) {
    if (o.kind === "PrometheusRule") {
      for (const g of o.spec.groups) for (const r of g.rules) note(r.expr, `rule ${r.alert || r.record}`);
    }
    if (o.kind === "ConfigMap" && o.metadata.labels?.grafana_dashboard) {
      for (const [k, v] of Object.entries(o.data)) {
        const d = JSON.parse(v);
        for (const p of d.panels || []) for (const t of p.targets || []) note(t.expr, `dashboard ${k}: ${p.title}`);
        for (const t of d.templating?.list || []) if (t.definition) note(t.definition, `dashboard ${k}: variable ${t.name}`);
      }
    }
  }
  let bad = 0;
  for (const [name, src] of used) {
    if (!exported.names.has(name)) { bad++; fail(`${where}: ${src} names ${name}, not exported (${exported.from})`); }
  }
  if (!bad && used.size) ok(`${where}: ${used.size} metric names used by rules and dashboard all exported (${exported.from})`);
}

function sameExcept(a, b, allowed, where) {
  const diffs = [];
  const walk = (x, y, p) => {
    if (allowed.some((re) => re.test(p))) return;
    if (typeof x !== typeof y || Array.isArray(x) !== Array.isArray(y)) { diffs.push(p); return; }
    if (x && typeof x === "object") {
      for (const k of new Set([...Object.keys(x), ...Object.keys(y)])) walk(x[k], y?.[k], `${p}/${k}`);
    } else if (x !== y) diffs.push(p);
  };
  walk(a, b, "");
  if (diffs.length) fail(`${where}: differ at ${diffs.join(", ")}`); else ok(where);
}

function sameFile(a, b) {
  const ra = path.relative(repo, a), rb = path.relative(repo, b);
  if (fs.readFileSync(a, "utf8") === fs.readFileSync(b, "utf8")) ok(`${ra} = ${rb}`);
  else fail(`${ra} differs from ${rb}: copy one onto the other`);
}

function writeNginxInputs(name, objs) {
  const dir = path.join(outDir, "nginx");
  fs.mkdirSync(dir, { recursive: true });
  for (const o of objs) {
    if (o.kind !== "ConfigMap") continue;
    const base = o.metadata.name;
    if (o.data?.["nginx.conf.template"]) {
      const env = objs.find((x) => x.kind === "ConfigMap" && x.metadata.name.startsWith("paygw-env")
        && x.metadata.namespace === o.metadata.namespace);
      fs.writeFileSync(path.join(dir, `${name}-${base}.template`), o.data["nginx.conf.template"]);
      fs.writeFileSync(path.join(dir, `${name}-${base}.env`),
        Object.entries(env?.data || {}).map(([k, v]) => `${k}=${v}\n`).join(""));
    }
    if (o.data?.["http-snippet"]) {
      fs.writeFileSync(path.join(dir, `${name}-${base}.snippet.conf`),
        `${o.data["main-snippet"] || ""}\nevents {}\nhttp {\n${o.data["http-snippet"]}\n}\n`);
    }
  }
}

// ------------------------------------------------------------------- main

const overlays = fs.readdirSync(path.join(k8sDir, "overlays")).sort()
  .map((d) => path.join(k8sDir, "overlays", d))
  .filter((d) => fs.existsSync(path.join(d, "kustomization.yaml")));
fs.mkdirSync(outDir, { recursive: true });
const exported = metricNamesExported();
const rendered = {};

for (const ov of overlays) {
  const name = path.basename(ov);
  console.log(`overlay ${name}`);
  let objs;
  try {
    objs = render(ov);
  } catch (e) {
    fail(`render: ${e.message}`);
    continue;
  }
  rendered[name] = objs;
  objs.sort((a, b) => idOf(a).localeCompare(idOf(b)));
  fs.writeFileSync(path.join(outDir, `${name}.yaml`),
    objs.map((o) => YAML.stringify(o, { lineWidth: 0, version: "1.1" })).join("---\n"));
  ok(`rendered ${objs.length} objects: ${[...new Set(objs.map((o) => o.kind))].sort().join(", ")}`);
  let valid = 0;
  for (const o of objs) if (await validate(o, name)) valid++;
  if (valid === objs.length) ok(`${valid}/${objs.length} objects valid against their schemas, no unknown fields`);
  checkMetrics(objs, exported, name);
  writeNginxInputs(name, objs);
}

console.log("copies");
sameFile(path.join(k8sDir, "plain-nginx/nginx.conf.template"), path.join(repo, "docker/nginx.conf.template"));
sameFile(path.join(k8sDir, "ingress-nginx/policy.conf"), path.join(k8sDir, "plain-nginx/policy.conf"));
if (rendered["plain-canary"]) {
  const objs = rendered["plain-canary"];
  const stable = objs.find((o) => o.kind === "Deployment" && o.metadata.name === "paygw");
  const canary = objs.find((o) => o.kind === "Deployment" && o.metadata.name === "paygw-canary");
  sameExcept(stable, canary, [/^\/metadata\/name$/, /^\/spec\/replicas$/, /paygw\.io\/track$/,
    /^\/spec\/template\/spec\/containers\/0\/image$/],
  "canary Deployment = stable Deployment but for name, replicas, track and image");
}

// Self-test of the unknown-field check: it must catch a misspelt field.
{
  const probe = JSON.parse(JSON.stringify(rendered.plain?.find((o) => o.kind === "Deployment") || {}));
  if (probe.spec) {
    probe.spec.template.spec.containers[0].readinesProbe = probe.spec.template.spec.containers[0].readinessProbe;
    const v = await validatorFor(probe);
    const t = traced(probe);
    v(t.proxy);
    const u = unknownFields(probe, t.reads, t.enumerated);
    if (u.length === 1 && u[0].endsWith("/readinesProbe")) ok("self-test: a misspelt field (readinesProbe) is caught");
    else fail(`self-test: unknown-field check found ${JSON.stringify(u)}`);
  }
}

console.log(failures ? `k8s-check (node): ${failures} failure(s)` : "k8s-check (node): all passed");
process.exit(failures ? 1 : 0);
