// Patch @vercel/cosmosdb-server 1.0.1 (test-only local Cosmos DB server), run by `npm ci` (postinstall).
//
// 1. A point read of a missing item in a partitioned container answers 500 ("Cannot read properties of
//    undefined") instead of 404, because lib/handler/read-document.js reads `data[path]` before checking
//    that the document exists. The patch adds that check.
// 2. A query in a container with a hierarchical partition key (paths ["/owner", "/session_id"]) is refused
//    ("missing partition keys") unless it names every level, while Cosmos DB serves a query that names only
//    the first level (a prefix query) from the partitions holding that prefix. The patch makes the guard
//    in lib/handler/query-documents.js ask for the first level only.
//
// Each patch is idempotent and fails loudly if its file no longer looks like the version it was written for.
"use strict";
const fs = require("fs");
const path = require("path");

const handlers = path.join(__dirname, "..", "node_modules", "@vercel", "cosmosdb-server", "lib", "handler");
const patches = [
  {
    file: path.join(handlers, "read-document.js"),
    what: "missing document -> 404",
    anchor: "const data = collection.document(docId, parsedPartitionKey).read();",
    replacement: (anchor, marker) =>
      `${anchor}\n        ${marker} if (!data) { res.statusCode = 404; return { code: "NotFound", message: "Entity with the specified id does not exist in the system." }; }`,
  },
  {
    file: path.join(handlers, "query-documents.js"),
    what: "hierarchical partition key prefix queries",
    anchor: ".containsPartitionKeys(paths)",
    replacement: (anchor, marker) => `.containsPartitionKeys(paths.slice(0, 1)) ${marker}`,
  },
];

for (const { file, what, anchor, replacement } of patches) {
  const marker = `/* patched: ${what} */`;
  const source = fs.readFileSync(file, "utf8");
  if (source.includes(marker)) {
    console.log(`cosmosdb-server: ${path.basename(file)} already patched (${what})`);
  } else if (!source.includes(anchor)) {
    console.error(`cosmosdb-server: cannot patch ${file}: anchor not found (package version changed?)`);
    process.exit(1);
  } else {
    fs.writeFileSync(file, source.replace(anchor, replacement(anchor, marker)));
    console.log(`cosmosdb-server: patched ${path.basename(file)} (${what})`);
  }
}
