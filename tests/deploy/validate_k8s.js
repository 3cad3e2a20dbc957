// Validates rendered Kubernetes objects against the Kubernetes API schemas from npm:
//   kubernetes-models (core, apps, policy, autoscaling, networking, ...) and
//   @kubernetes-models/prometheus-operator (ServiceMonitor, PodMonitor, PrometheusRule).
// Two checks per object:
//   1. the package's validate() (JSON Schema: types, enums, required fields, formats);
//   2. strict fields: every field must exist in the API type (the API server rejects unknown
//      fields under kubectl's default strict validation, but the JSON Schemas allow them). The
//      field lists come from the packages' TypeScript declarations (.d.ts).
// LeaderWorkerSet (leaderworkerset.x-k8s.io/v1) has no npm model: its fields are checked against
// the LWS v1 API below, and its leader/worker pod templates as core PodTemplateSpecs.
//
// Usage: node validate_k8s.js NODE_MODULES_DIR OBJECTS.json   (a JSON array of objects)
// Prints one line per problem; exit status 1 if any.
"use strict";
const fs = require("fs");
const path = require("path");

const NM = path.resolve(process.argv[2] || "");
const objects = JSON.parse(fs.readFileSync(process.argv[3], "utf8"));

// ---- A reader for the generated .d.ts files (the subset of TypeScript they use). ------------
function tokenize(src) {
  src = src.replace(/\/\*[\s\S]*?\*\//g, " ").replace(/\/\/[^\n]*/g, " ");
  const re = /\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[A-Za-z_$][\w$]*|\d+(?:\.\d+)?|=>|[{}\[\]<>()|;:?,.=&*])/y;
  const out = [];
  let m;
  re.lastIndex = 0;
  while (re.lastIndex < src.length && (m = re.exec(src))) out.push(m[1]);
  return out;
}

const fileCache = new Map();
function loadFile(file) {
  if (fileCache.has(file)) return fileCache.get(file);
  const info = { file, decls: {}, imports: {}, aliases: {} };
  fileCache.set(file, info);
  if (!fs.existsSync(file)) return info;
  const t = tokenize(fs.readFileSync(file, "utf8"));
  let i = 0;
  const p = {
    peek: (k = 0) => t[i + k],
    next: () => t[i++],
    eat(x) { if (t[i] !== x) throw new Error(`${file}: expected ${x} at token ${i}, got ${t[i]}`); i++; },
  };
  const skipBalanced = (open, close) => {
    let depth = 0;
    do {
      if (t[i] === open) depth++;
      else if (t[i] === close) depth--;
      i++;
    } while (depth > 0 && i < t.length);
  };
  while (i < t.length) {
    if (t[i] === "import" && t[i + 1] === "{") {
      i += 2;
      const names = [];
      while (t[i] !== "}") {
        const n = t[i++];
        let local = n;
        if (t[i] === "as") { local = t[i + 1]; i += 2; }
        names.push([n, local]);
        if (t[i] === ",") i++;
      }
      i++; // }
      p.eat("from");
      const spec = JSON.parse(t[i++]);
      for (const [n, local] of names) info.imports[local] = { spec, name: n };
    } else if (t[i] === "export" && t[i + 1] === "interface") {
      i += 2;
      const name = t[i++];
      const ext = [];
      if (t[i] === "extends") {
        i++;
        while (t[i] !== "{") { if (/^[A-Za-z_]/.test(t[i])) ext.push(t[i]); if (t[i] === "<") skipBalanced("<", ">"); else i++; }
      }
      info.decls[name] = { ...parseObject(p), ext };
    } else if (t[i] === "export" && t[i + 1] === "declare" && t[i + 2] === "type") {
      i += 3;
      const name = t[i++];
      p.eat("=");
      info.decls[name] = parseType(p);
    } else if (t[i] === "export" && t[i + 1] === "{") {
      i += 2;
      while (t[i] !== "}") {
        const n = t[i++];
        if (t[i] === "as") { info.aliases[t[i + 1]] = n; i += 2; }
        if (t[i] === ",") i++;
      }
      i++;
    } else if (t[i] === "{") {
      skipBalanced("{", "}");
    } else {
      i++;
    }
  }
  return info;
}

function parseType(p) {
  const types = [parsePrimary(p)];
  while (p.peek() === "|" || p.peek() === "&") { p.next(); types.push(parsePrimary(p)); }
  return types.length === 1 ? types[0] : { k: "union", types };
}

function parsePrimary(p) {
  let t;
  const tok = p.next();
  if (tok === "Array" && p.peek() === "<") {
    p.eat("<"); const of = parseType(p); p.eat(">");
    t = { k: "array", of };
  } else if (tok === "{") {
    t = parseObjectBody(p);
  } else if (tok === "(") {
    t = parseType(p); p.eat(")");
  } else if (tok[0] === '"' || tok[0] === "'" || /^\d/.test(tok)) {
    t = { k: "lit" };
  } else if (["string", "number", "boolean", "any", "unknown", "object", "null", "undefined", "true", "false"].includes(tok)) {
    t = { k: "any" };
  } else {
    t = { k: "ref", name: tok };
    if (p.peek() === "<") { // generic reference: treat as opaque
      let depth = 0;
      do { const x = p.next(); if (x === "<") depth++; if (x === ">") depth--; } while (depth > 0);
      t = { k: "any" };
    }
    if (p.peek() === "[" && p.peek(1) && p.peek(1)[0] === '"') { // Indexed access: X["kind"]
      p.next(); p.next(); p.eat("]");
      t = { k: "any" };
    }
  }
  while (p.peek() === "[" && p.peek(1) === "]") { p.next(); p.next(); t = { k: "array", of: t }; }
  return t;
}

function parseObject(p) {
  p.eat("{");
  return parseObjectBody(p);
}

function parseObjectBody(p) {
  // The opening "{" is consumed.
  const props = {};
  let index = null;
  while (p.peek() !== "}") {
    if (p.peek() === "[") {
      p.next(); p.next(); p.eat(":"); p.next(); p.eat("]"); p.eat(":");
      index = parseType(p);
    } else {
      let key = p.next();
      if (key === "readonly") key = p.next();
      if (key[0] === '"' || key[0] === "'") key = key.slice(1, -1);
      if (p.peek() === "?") p.next();
      p.eat(":");
      props[key] = parseType(p);
    }
    if (p.peek() === ";" || p.peek() === ",") p.next();
  }
  p.eat("}");
  return { k: "obj", props, index };
}

function resolveSpec(fromFile, spec) {
  const base = spec.startsWith(".") ? path.resolve(path.dirname(fromFile), spec) : path.join(NM, spec);
  for (const c of [base + ".d.ts", path.join(base, "index.d.ts")]) if (fs.existsSync(c)) return c;
  return base + ".d.ts";
}

// Resolves a named type in a file to its declaration (following aliases and imports).
function resolveRef(file, name, depth = 0) {
  if (depth > 20) return { k: "any" };
  const info = loadFile(file);
  if (info.decls[name]) return { ...info.decls[name], file };
  if (info.aliases[name] && info.decls[info.aliases[name]]) return { ...info.decls[info.aliases[name]], file };
  if (info.imports[name]) {
    const imp = info.imports[name];
    return resolveRef(resolveSpec(file, imp.spec), imp.name, depth + 1);
  }
  return { k: "any" }; // TypeMeta and other base types
}

function withFile(type, file) {
  return type.file ? type : { ...type, file };
}

// Returns a list of "path: unknown field" problems for value against type.
function strict(value, type, file, where, out) {
  if (value === null || value === undefined) return;
  if (type.k === "ref") {
    const r = resolveRef(file, type.name);
    return strict(value, r, r.file || file, where, out);
  }
  if (type.k === "array") {
    if (Array.isArray(value)) value.forEach((v, i) => strict(v, type.of, file, `${where}[${i}]`, out));
    return;
  }
  if (type.k === "union") {
    const objectish = type.types.filter((t) => t.k !== "any" && t.k !== "lit");
    if (!objectish.length || typeof value !== "object") return;
    let best = null;
    for (const t of objectish) {
      const errs = [];
      strict(value, t, file, where, errs);
      if (!errs.length) return;
      if (!best || errs.length < best.length) best = errs;
    }
    out.push(...best);
    return;
  }
  if (type.k === "obj") {
    if (typeof value !== "object" || Array.isArray(value)) return;
    const extKeys = (type.ext || []).length ? ["apiVersion", "kind"] : [];
    for (const [k, v] of Object.entries(value)) {
      if (type.props[k]) strict(v, type.props[k], type.file || file, `${where}.${k}`, out);
      else if (type.index) strict(v, type.index, type.file || file, `${where}.${k}`, out);
      else if (!extKeys.includes(k)) out.push(`${where}.${k}: unknown field`);
    }
  }
}

// ---- Models ---------------------------------------------------------------------------------
function modelFile(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  if (group === "monitoring.coreos.com") {
    return path.join(NM, "@kubernetes-models/prometheus-operator", group, version, kind);
  }
  return path.join(NM, "kubernetes-models", group || "", version, kind);
}

function validateModel(obj, where, problems) {
  const file = modelFile(obj.apiVersion, obj.kind);
  let Model;
  try {
    Model = require(file)[obj.kind];
  } catch (e) {
    problems.push(`${where}: no schema for ${obj.apiVersion} ${obj.kind}`);
    return;
  }
  try {
    new Model(obj).validate();
  } catch (e) {
    const errs = e.errors || [{ instancePath: "", message: e.message }];
    for (const x of errs) problems.push(`${where}${x.instancePath.replace(/\//g, ".")}: ${x.message}${x.params && x.params.allowedValues ? " " + JSON.stringify(x.params.allowedValues) : ""}`);
  }
  const dts = file + ".d.ts";
  const iface = resolveRef(dts, "I" + obj.kind);
  strict(obj, iface, dts, where, problems);
}

// LeaderWorkerSet v1 (sigs.k8s.io/lws api/leaderworkerset/v1): fields, enums, required.
const LWS = {
  spec: {
    replicas: "int", startupPolicy: ["LeaderCreated", "LeaderReady"],
    rolloutStrategy: { type: ["RollingUpdate"], rollingUpdateConfiguration: { partition: "int", maxUnavailable: "intOrString", maxSurge: "intOrString" } },
    networkConfig: { subdomainPolicy: ["Shared", "UniquePerReplica"] },
    leaderWorkerTemplate: {
      leaderTemplate: "podTemplateSpec", workerTemplate: "podTemplateSpec", size: "int",
      restartPolicy: ["Default", "RecreateGroupOnPodRestart", "RecreateGroupAfterStart", "None"],
      subGroupPolicy: { subGroupPolicyType: ["LeaderWorker", "LeaderExcluded"], subGroupSize: "int" },
      volumeClaimTemplates: "any", persistentVolumeClaimRetentionPolicy: "any",
    },
  },
};

function checkLws(obj, where, problems) {
  for (const k of Object.keys(obj)) if (!["apiVersion", "kind", "metadata", "spec"].includes(k)) problems.push(`${where}.${k}: unknown field`);
  if (!obj.metadata || !obj.metadata.name) problems.push(`${where}.metadata.name: required`);
  if (!obj.spec || !obj.spec.leaderWorkerTemplate || !obj.spec.leaderWorkerTemplate.workerTemplate) {
    problems.push(`${where}.spec.leaderWorkerTemplate.workerTemplate: required`);
  }
  const walk = (value, schema, at) => {
    if (schema === "any") return;
    if (schema === "int") { if (!Number.isInteger(value) || value < 0) problems.push(`${at}: must be a non-negative integer`); return; }
    if (schema === "intOrString") { if (!Number.isInteger(value) && !/^\d+%?$/.test(String(value))) problems.push(`${at}: must be an integer or a percentage`); return; }
    if (Array.isArray(schema)) { if (!schema.includes(value)) problems.push(`${at}: must be one of ${schema.join(", ")}`); return; }
    if (schema === "podTemplateSpec") {
      // As a core PodTemplate's template: the JSON Schema and the strict field check.
      validateModel({ apiVersion: "v1", kind: "PodTemplate", metadata: { name: "lws-template" }, template: value }, at.replace(/$/, "<PodTemplateSpec>"), problems);
      return;
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) { problems.push(`${at}: must be an object`); return; }
    for (const [k, v] of Object.entries(value)) {
      if (!(k in schema)) problems.push(`${at}.${k}: unknown field`);
      else walk(v, schema[k], `${at}.${k}`);
    }
  };
  walk(obj.spec, LWS.spec, `${where}.spec`);
  if (obj.metadata) validateModel({ apiVersion: "v1", kind: "ConfigMap", metadata: obj.metadata }, `${where}<metadata>`, problems);
}

const problems = [];
objects.forEach((obj, n) => {
  const where = `${obj.kind || "?"}/${(obj.metadata && obj.metadata.name) || "#" + n}`;
  if (!obj.apiVersion || !obj.kind) { problems.push(`${where}: apiVersion and kind are required`); return; }
  if (obj.apiVersion === "leaderworkerset.x-k8s.io/v1" && obj.kind === "LeaderWorkerSet") checkLws(obj, where, problems);
  else validateModel(obj, where, problems);
});
for (const p of problems) console.log(p);
console.log(`${objects.length} object(s) validated, ${problems.length} problem(s)`);
process.exit(problems.length ? 1 : 0);
