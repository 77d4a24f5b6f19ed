// Validate an OpenAPI 3.1 document (gateway/openapi.json, or what a running
// gateway serves at /openapi.json) and, optionally, real responses against
// the schemas it documents for them.
//
//   node validate.mjs [FILE | -] [--samples SAMPLES.json]
//
// FILE defaults to ../openapi.json; "-" reads standard input. SAMPLES is a
// JSON array of {method, path, status, body}: path is the document's path
// template ("/api/users/me"), body a parsed JSON answer; each must match the
// schema documented for that status, with no undocumented members. Exits 0
// when all is well, 1 with one line per problem otherwise, 2 on bad usage.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { Validator } from "@seriousme/openapi-schema-validator";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

const METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

function usage(msg) {
  console.error(`validate.mjs: ${msg}\nusage: node validate.mjs [FILE | -] [--samples FILE]`);
  process.exit(2);
}

function parseArgs(argv) {
  const here = dirname(fileURLToPath(import.meta.url));
  const out = { file: join(here, "..", "openapi.json"), samples: null };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--samples") {
      if (i + 1 >= argv.length) usage("--samples needs a file");
      out.samples = argv[++i];
    } else if (argv[i].startsWith("--")) {
      usage(`unknown option ${argv[i]}`);
    } else {
      out.file = argv[i];
    }
  }
  return out;
}

function readJson(file, what) {
  const text = file === "-" ? readFileSync(0, "utf8") : readFileSync(file, "utf8");
  try {
    return JSON.parse(text);
  } catch (e) {
    console.error(`${what} ${file}: not JSON: ${e.message}`);
    process.exit(1);
  }
}

// "#/components/schemas/User" -> the object it names, or undefined.
function deref(doc, ref) {
  if (!ref.startsWith("#/")) return undefined;
  let node = doc;
  for (const raw of ref.slice(2).split("/")) {
    const key = raw.replace(/~1/g, "/").replace(/~0/g, "~");
    if (node === null || typeof node !== "object" || !(key in node)) return undefined;
    node = node[key];
  }
  return node;
}

function* walk(node, at) {
  if (node === null || typeof node !== "object") return;
  yield [node, at];
  for (const [k, v] of Object.entries(node)) yield* walk(v, `${at}/${k}`);
}

const resolve = (doc, obj) => (obj && obj.$ref ? deref(doc, obj.$ref) : obj);

// What the JSON Schema of the specification does not say.
function checkSemantics(doc, problems) {
  for (const [node, at] of walk(doc, "#")) {
    if (typeof node.$ref === "string" && deref(doc, node.$ref) === undefined)
      problems.push(`${at}: $ref ${node.$ref} does not resolve`);
  }
  const declaredTags = new Set((doc.tags || []).map((t) => t.name));
  const operationIds = new Map();
  for (const [path, item] of Object.entries(doc.paths || {})) {
    const templated = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
    const common = (item.parameters || []).map((p) => resolve(doc, p));
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      const where = `${method.toUpperCase()} ${path}`;
      const params = [...common, ...(op.parameters || []).map((p) => resolve(doc, p))];
      const inPath = params.filter((p) => p && p.in === "path").map((p) => p.name);
      for (const name of templated)
        if (!inPath.includes(name)) problems.push(`${where}: path parameter {${name}} not declared`);
      for (const name of inPath)
        if (!templated.includes(name)) problems.push(`${where}: parameter ${name} is not in the path`);
      if (op.operationId) {
        if (operationIds.has(op.operationId))
          problems.push(`${where}: operationId ${op.operationId} also used by ${operationIds.get(op.operationId)}`);
        operationIds.set(op.operationId, where);
      } else {
        problems.push(`${where}: no operationId`);
      }
      for (const tag of op.tags || [])
        if (!declaredTags.has(tag)) problems.push(`${where}: tag "${tag}" is not declared`);
      const statuses = Object.keys(op.responses || {});
      if (!statuses.some((s) => /^2/.test(s))) problems.push(`${where}: no success response`);
      if (!op.summary) problems.push(`${where}: no summary`);
    }
  }
}

// A copy of doc in which every object schema that does not say otherwise
// refuses undocumented members: a sample with a field the document does not
// describe is a difference to fix (in the document or in the handler).
function closedSchemas(doc) {
  const copy = structuredClone(doc);
  for (const [node] of walk(copy, "#")) {
    const types = [].concat(node.type || []);
    if (types.includes("object") && node.properties && !("additionalProperties" in node) &&
        !("unevaluatedProperties" in node))
      node.additionalProperties = false;
  }
  return copy;
}

function makeAjv(doc, problems) {
  const ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: true });
  addFormats(ajv);
  try {
    ajv.addSchema(doc, "doc");
  } catch (e) {
    problems.push(`schemas: ${e.message}`);
    return null;
  }
  return ajv;
}

// Compile every JSON schema under components/schemas, so a schema that
// cannot be used to check anything is reported here and not by a client.
function checkSchemas(doc, ajv, problems) {
  for (const name of Object.keys(doc.components?.schemas || {})) {
    try {
      ajv.getSchema(`doc#/components/schemas/${name}`);
    } catch (e) {
      problems.push(`#/components/schemas/${name}: ${e.message}`);
    }
  }
}

function pointer(parts) {
  return "#/" + parts.map((p) => String(p).replace(/~/g, "~0").replace(/\//g, "~1")).join("/");
}

function checkSample(doc, ajv, s, problems) {
  const where = `${String(s.method).toUpperCase()} ${s.path} -> ${s.status}`;
  const op = doc.paths?.[s.path]?.[String(s.method).toLowerCase()];
  if (!op) return problems.push(`${where}: no such operation in the document`);
  const status = String(s.status);
  const key = [status, `${status[0]}XX`, "default"].find((k) => op.responses?.[k]);
  if (!key) return problems.push(`${where}: status not documented`);
  let parts = ["paths", s.path, String(s.method).toLowerCase(), "responses", key];
  let response = op.responses[key];
  if (response.$ref) {
    parts = response.$ref.slice(2).split("/").map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
    response = deref(doc, response.$ref);
  }
  if (!response.content?.["application/json"]?.schema)
    return problems.push(`${where}: no application/json schema documented`);
  const at = pointer([...parts, "content", "application/json", "schema"]);
  const check = ajv.compile({ $ref: `doc${at}` });
  if (!check(s.body)) {
    for (const e of check.errors)
      problems.push(`${where}: body${e.instancePath} ${e.message} (${JSON.stringify(e.params)})`);
  }
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const doc = readJson(args.file, "document");
  const problems = [];

  const validator = new Validator();
  const res = await validator.validate(doc);
  if (!res.valid) {
    for (const e of [].concat(res.errors || []))
      problems.push(`schema: ${e.instancePath || "/"} ${e.message} ${JSON.stringify(e.params || {})}`);
  } else if (!String(doc.openapi).startsWith("3.1")) {
    problems.push(`openapi is ${doc.openapi}, expected 3.1.x`);
  }
  checkSemantics(doc, problems);
  const ajv = makeAjv(doc, problems);
  if (ajv) checkSchemas(doc, ajv, problems);

  let nsamples = 0;
  if (args.samples && ajv) {
    const samples = readJson(args.samples, "samples");
    const closed = closedSchemas(doc);
    const strict = makeAjv(closed, problems);
    nsamples = samples.length;
    for (const s of samples) checkSample(closed, strict, s, problems);
  }

  if (problems.length) {
    for (const p of problems) console.error(p);
    console.error(`${problems.length} problem(s) in ${args.file}`);
    process.exit(1);
  }
  const nops = Object.values(doc.paths || {}).reduce(
    (n, item) => n + METHODS.filter((m) => item[m]).length, 0);
  console.log(`${args.file}: valid OpenAPI ${doc.openapi}, ${nops} operations` +
    (args.samples ? `, ${nsamples} sample responses match` : ""));
}

main().catch((e) => {
  console.error(`validate.mjs: ${e.stack || e}`);
  process.exit(1);
});
