// Parses the Dockerfiles with dockerfile-utils (the VS Code Docker extension's validator, from
// npm; install-deps puts it in third_party/npm) and fails on any diagnostic: unknown instructions
// or flags, bad HEALTHCHECK durations, malformed JSON forms, duplicate stage names, ...
// Usage: node validate_dockerfiles.js NODE_MODULES_DIR DOCKERFILE...
"use strict";
const fs = require("fs");
const path = require("path");
const [nodeModules, ...files] = process.argv.slice(2);
const utils = require(path.resolve(nodeModules, "dockerfile-utils"));
const E = utils.ValidationSeverity.ERROR;
const settings = {
  deprecatedMaintainer: E, directiveCasing: E, emptyContinuationLine: E, instructionCasing: E,
  instructionCmdMultiple: E, instructionEntrypointMultiple: E, instructionHealthcheckMultiple: E,
  instructionJSONInSingleQuotes: E, instructionWorkdirRelative: E,
};
let bad = 0;
for (const f of files) {
  const diags = utils.validate(fs.readFileSync(f, "utf8"), settings);
  for (const d of diags) {
    console.log(`${f}:${d.range.start.line + 1}: ${d.message}`);
    bad++;
  }
}
console.log(`${files.length} Dockerfile(s) parsed, ${bad} diagnostic(s)`);
process.exit(files.length && !bad ? 0 : 1);
