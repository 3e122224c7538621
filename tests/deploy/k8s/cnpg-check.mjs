// Checks CloudNativePG resources (Cluster, Pooler, ScheduledBackup, Backup)
// in rendered manifests read from stdin, against CloudNativePG's API as
// @kubernetes-models/cloudnative-pg publishes it (generated from the
// operator's CRDs): its validators for types, enums and required fields,
// and its declared fields for everything else, so that an unknown or
// misspelt field is an error as under fieldValidation=Strict. Fields of
// Kubernetes' own types inside them (resources, env, ...) are checked for
// their types only. Prints one ERROR line per problem and a summary;
// exit 0 valid, 1 invalid, 2 usage.
//
//   kubectl kustomize deploy/k8s/overlays/prod | node cnpg-check.mjs
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { parseAllDocuments } from "yaml";
import { Backup } from "@kubernetes-models/cloudnative-pg/postgresql.cnpg.io/v1/Backup";
import { Cluster } from "@kubernetes-models/cloudnative-pg/postgresql.cnpg.io/v1/Cluster";
import { Pooler } from "@kubernetes-models/cloudnative-pg/postgresql.cnpg.io/v1/Pooler";
import { ScheduledBackup } from "@kubernetes-models/cloudnative-pg/postgresql.cnpg.io/v1/ScheduledBackup";

const models = { Backup, Cluster, Pooler, ScheduledBackup };
const GROUP = "postgresql.cnpg.io/";

// ---- the declared fields, from the package's .d.ts files ----

const require = createRequire(import.meta.url);
const pkgDir = path.dirname(require.resolve("@kubernetes-models/cloudnative-pg/package.json"));

function* dtsFiles(dir) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) yield* dtsFiles(p);
    else if (e.name.endsWith(".d.ts")) yield p;
  }
}

// interface name -> { fields: Map(field -> type text), parents: [names] }
const ifaces = new Map();
const aliases = new Map(); // exported alias -> interface name
for (const f of dtsFiles(pkgDir)) {
  const text = fs.readFileSync(f, "utf8");
  for (const m of text.matchAll(/export interface (\w+)(?: extends ([\w, ]+))? \{\n([\s\S]*?)\n\}/g)) {
    const fields = new Map();
    for (const line of m[3].matchAll(/^ {4}"([^"]+)"\??: (.+?);?$/gm)) fields.set(line[1], line[2]);
    const parents = m[2] ? m[2].split(",").map((s) => s.trim()) : [];
    ifaces.set(m[1], { fields, parents });
  }
  for (const m of text.matchAll(/export type \{ (\w+) as (\w+)/g)) aliases.set(m[2], m[1]);
}

function iface(name) {
  return ifaces.get(name) ?? ifaces.get(aliases.get(name));
}

function fieldsOf(name) {
  const i = iface(name);
  if (!i) return null;
  const all = new Map(i.fields);
  for (const p of i.parents) for (const [k, v] of fieldsOf(p) ?? []) all.set(k, v);
  return all;
}

// The interface a field's type names (its element's, for an array), or
// null for what is not CloudNativePG's own (scalars, maps, Kubernetes types).
function declared(type) {
  const m = /^(?:Array<)?(IComGithubCloudnativePg\w+)>?$/.exec(type.trim());
  return m && iface(m[1]) ? m[1] : null;
}

function strict(value, typeName, where, errors) {
  if (value === null || typeof value !== "object") return;
  if (Array.isArray(value)) {
    value.forEach((v, i) => strict(v, typeName, `${where}[${i}]`, errors));
    return;
  }
  const fields = fieldsOf(typeName);
  if (!fields) return;
  for (const [k, v] of Object.entries(value)) {
    if (!fields.has(k)) {
      const near = [...fields.keys()].filter((f) => f.toLowerCase() === k.toLowerCase() || lev(f, k) <= 2);
      errors.push(`${where}.${k}: unknown field${near.length ? ` (did you mean "${near[0]}"?)` : ""}`);
      continue;
    }
    const inner = declared(fields.get(k));
    if (inner) strict(v, inner, `${where}.${k}`, errors);
  }
}

function lev(a, b) {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++)
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
  return d[a.length][b.length];
}

// ---- the run ----

if (process.argv.length > 2) {
  console.error("usage: kubectl kustomize DIR | node cnpg-check.mjs");
  process.exit(2);
}
const input = fs.readFileSync(0, "utf8");
let errors = 0;
let checked = 0;
const report = (what, msg) => {
  console.log(`ERROR ${what}: ${msg}`);
  errors++;
};
for (const doc of parseAllDocuments(input)) {
  if (doc.errors.length) {
    report("input", doc.errors[0].message);
    continue;
  }
  const obj = doc.toJS();
  if (!obj || typeof obj.apiVersion !== "string" || !obj.apiVersion.startsWith(GROUP)) continue;
  const what = `${obj.apiVersion} ${obj.kind} ${obj.metadata?.name ?? "?"}`;
  const Model = models[obj.kind];
  if (obj.apiVersion !== `${GROUP}v1` || !Model) {
    report(what, `not a kind this check knows (${Object.keys(models).join(", ")} of ${GROUP}v1)`);
    continue;
  }
  checked++;
  try {
    new Model(obj).validate();
  } catch (e) {
    for (const d of e.details ?? [{ message: e.message }])
      report(what, `${d.instancePath ? d.instancePath + " " : ""}${d.message}${d.params?.allowedValues ? ` (${d.params.allowedValues.join(", ")})` : ""}`);
  }
  const errs = [];
  const specType = fieldsOf(`I${obj.kind}`)?.get("spec");
  if (specType) strict(obj.spec, declared(specType), "spec", errs);
  for (const k of Object.keys(obj)) if (!["apiVersion", "kind", "metadata", "spec"].includes(k)) errs.push(`${k}: unknown field`);
  for (const e of errs) report(what, e);
}
console.log(`cnpg-check: ${checked} CloudNativePG object(s): ${errors} error(s) -> ${errors ? "INVALID" : "valid"}`);
process.exit(errors ? 1 : 0);
