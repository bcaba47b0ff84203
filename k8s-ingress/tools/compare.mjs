// node compare.mjs A.yaml B.yaml: the same objects (order aside)?
// Used by scripts/k8s-check.sh to hold check.mjs's renderer to
// `kubectl kustomize` where kubectl exists.
import fs from "node:fs";
import YAML from "yaml";

const load = (f) => {
  const m = new Map();
  for (const d of YAML.parseAllDocuments(fs.readFileSync(f, "utf8"), { version: "1.1" })) {
    const o = d.toJSON();
    if (o) m.set(`${o.kind}/${o.metadata.namespace || "-"}/${o.metadata.name}`, o);
  }
  return m;
};
const canon = (v) => (Array.isArray(v) ? v.map(canon)
  : v && typeof v === "object" ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, canon(v[k])]))
    : v);
const [a, b] = [load(process.argv[2]), load(process.argv[3])];
const diffs = [];
for (const id of new Set([...a.keys(), ...b.keys()])) {
  if (!a.has(id) || !b.has(id)) { diffs.push(`${id}: only in ${a.has(id) ? "the first" : "the second"}`); continue; }
  if (JSON.stringify(canon(a.get(id))) !== JSON.stringify(canon(b.get(id)))) diffs.push(`${id}: differs`);
}
if (diffs.length) { console.log(diffs.join("\n")); process.exit(1); }
console.log(`${a.size} objects, identical`);
