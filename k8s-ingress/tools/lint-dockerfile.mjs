// node lint-dockerfile.mjs FILE...: dockerfile-utils' validator (the one
// behind VS Code's Dockerfile support) over each Dockerfile; any
// diagnostic fails. Stands in for hadolint/`docker build --check`, which
// this machine does not have (no BuildKit engine).
import fs from "node:fs";
import { validate } from "dockerfile-utils";

let bad = 0;
for (const f of process.argv.slice(2)) {
  const text = fs.readFileSync(f, "utf8");
  const diags = validate(text);
  for (const d of diags) {
    bad++;
    console.log(`  FAIL ${f}:${d.range.start.line + 1}: ${d.message}`);
  }
  if (!diags.length) console.log(`  ok   ${f}: no diagnostics (dockerfile-utils)`);
}
process.exit(bad ? 1 : 0);
