// Validates Gateway API objects (gateway.networking.k8s.io: Gateway, GRPCRoute,
// BackendTLSPolicy, ...) offline, as validate_k8s.py does for the core kinds, which have
// strict JSON schemas in ../shared/k8s-schemas; the Gateway API kinds have none there.
//
//   node validate_gateway_api.mjs OBJECTS.json      (run where these are installed:
//        npm install @kubernetes-models/gateway-api@2.0.0 typescript@5.9.3)
//
// OBJECTS.json is an array of objects (the rendered manifests, as JSON). Two checks, since
// neither is enough alone:
//   1. the package's validate(): the CRDs' OpenAPI schemas — types, required fields,
//      enums, patterns, lengths — but not unknown fields;
//   2. the TypeScript compiler on `const o: IGRPCRoute = {...}` for every object: the
//      package's interfaces admit only the fields the API has, so a misspelt field
//      (`mehtod:`) is an error, as the strict core schemas make it.
// An object of a kind or version the package does not know is an error too. Prints one line
// per object and "N objects, N with errors"; exits 1 on any error.
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";

const objects = JSON.parse(readFileSync(process.argv[2], "utf8"));
const problems = new Map(); // index -> [messages]
const note = (i, msg) => problems.set(i, [...(problems.get(i) ?? []), msg]);
const ident = (o) => `${o.kind}/${o.metadata?.name}`;
const moduleOf = (o) => {
  const [group, version] = String(o.apiVersion).split("/");
  return `@kubernetes-models/gateway-api/${group}/${version}/${o.kind}`;
};

// 1. Schema validation by the models.
const known = [];
for (const [i, o] of objects.entries()) {
  let Model;
  try {
    Model = (await import(moduleOf(o)))[o.kind];
  } catch {
    note(i, `no model for ${o.apiVersion} ${o.kind}`);
    continue;
  }
  known.push(i);
  try {
    new Model(o).validate();
  } catch (e) {
    note(i, e.message);
  }
}

// 2. Unknown fields, through the compiler's excess-property check on object literals.
const lines = ["export {};"];
for (const i of known) {
  const o = objects[i];
  lines.push(`import type { I${o.kind} as T${i} } from "${moduleOf(o)}";`);
  lines.push(`const o${i}: T${i} = ${JSON.stringify(o)};`, `void o${i};`);
}
writeFileSync("objects.ts", lines.join("\n") + "\n");
let out = "";
try {
  execFileSync(
    "node_modules/.bin/tsc",
    ["--noEmit", "--strict", "--skipLibCheck", "--module", "nodenext", "--moduleResolution",
     "nodenext", "--target", "es2022", "objects.ts"],
    { encoding: "utf8" },
  );
} catch (e) {
  out = `${e.stdout ?? ""}${e.stderr ?? ""}`;
  if (!out.trim()) out = `tsc failed: ${e.message}`;
}
const known_lines = new Map(); // line in objects.ts -> object index
lines.forEach((l, n) => {
  const m = /^const o(\d+):/.exec(l);
  if (m) known_lines.set(n + 1, Number(m[1]));
});
for (const line of out.split("\n").filter((l) => l.trim())) {
  const m = /^objects\.ts\((\d+),\d+\): error TS\d+: (.*)$/.exec(line);
  const i = m ? known_lines.get(Number(m[1])) : undefined;
  if (i === undefined) {
    note(-1, line);
  } else {
    note(i, m[2]);
  }
}

for (const [i, o] of objects.entries()) {
  const p = problems.get(i);
  console.log(p ? `FAIL ${ident(o)}: ${p.join("; ")}` : `ok   ${ident(o)} (${o.apiVersion})`);
}
for (const msg of problems.get(-1) ?? []) console.log(`FAIL ${msg}`);
const bad = [...problems.keys()].length;
console.log(`${objects.length} objects, ${bad} with errors (Gateway API models + TypeScript)`);
process.exit(bad || objects.length === 0 ? 1 : 0);
