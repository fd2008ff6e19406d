// Patch @vercel/cosmosdb-server 1.0.1 (test-only local Cosmos DB server), run by `npm ci` (postinstall).
//
// Defect: a point read of a missing item in a partitioned container answers 500
// ("Cannot read properties of undefined") instead of 404, because
// lib/handler/read-document.js reads `data[path]` before checking that the
// document exists. The patch adds that check. It is idempotent and fails loudly
// if the file no longer looks like the version it was written for.
"use strict";
const fs = require("fs");
const path = require("path");

const file = path.join(__dirname, "..", "node_modules", "@vercel", "cosmosdb-server", "lib", "handler", "read-document.js");
const marker = "/* patched: missing document -> 404 */";
const anchor = "const data = collection.document(docId, parsedPartitionKey).read();";
const check = `${marker} if (!data) { res.statusCode = 404; return { code: "NotFound", message: "Entity with the specified id does not exist in the system." }; }`;

const source = fs.readFileSync(file, "utf8");
if (source.includes(marker)) {
  console.log("cosmosdb-server: read-document.js already patched");
} else if (!source.includes(anchor)) {
  console.error(`cosmosdb-server: cannot patch ${file}: anchor not found (package version changed?)`);
  process.exit(1);
} else {
  fs.writeFileSync(file, source.replace(anchor, `${anchor}\n        ${check}`));
  console.log("cosmosdb-server: patched read-document.js (missing document -> 404)");
}
