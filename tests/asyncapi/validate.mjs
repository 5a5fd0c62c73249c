// Parses an AsyncAPI document with the official @asyncapi/parser (its default ruleset) and
// prints one JSON object: the parser's version, every diagnostic, the counts by severity and,
// when the document parsed, its version and how many channels and operations it declares.
// Exits 0 when there is a document and no error, 1 otherwise, 2 on misuse.
// Usage: node tests/asyncapi/validate.mjs DOCUMENT.json
// @asyncapi/parser comes from package-lock.json at the repository root (`make node`).
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { resolve } from "node:path";

import { Parser } from "@asyncapi/parser";

const SEVERITY = ["error", "warning", "information", "hint"];

const [path, ...extra] = process.argv.slice(2);
if (!path || extra.length > 0) {
  console.error("usage: node tests/asyncapi/validate.mjs DOCUMENT.json");
  process.exit(2);
}
const source = resolve(path);
const { version } = createRequire(import.meta.url)("@asyncapi/parser/package.json");
const { document, diagnostics } = await new Parser().parse(await readFile(source, "utf8"), { source });

const counts = { error: 0, warning: 0, information: 0, hint: 0 };
const listed = diagnostics.map((diagnostic) => {
  const severity = SEVERITY[diagnostic.severity] ?? "error";
  counts[severity] += 1;
  return {
    severity,
    code: String(diagnostic.code),
    path: "/" + (diagnostic.path ?? []).join("/"),
    message: diagnostic.message,
  };
});
const report = {
  parser: `@asyncapi/parser ${version}`,
  counts,
  diagnostics: listed,
  document: document
    ? {
        asyncapi: document.version(),
        channels: document.channels().length,
        operations: document.operations().length,
        messages: document.allMessages().length,
      }
    : null,
};
console.log(JSON.stringify(report, null, 2));
process.exit(counts.error > 0 || !document ? 1 : 0);
