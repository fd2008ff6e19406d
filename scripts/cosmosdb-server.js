// Start the local Cosmos DB protocol server (@vercel/cosmosdb-server, test-only) on loopback.
//
//   node scripts/cosmosdb-server.js --port 8081 [--host 127.0.0.1] [--keep-alive]
//
// Like the package's own CLI, but --keep-alive keeps connections open between requests, as Azure Cosmos DB
// does (the CLI always answers "Connection: close", so every request pays a new TLS handshake). The
// benchmark runs both modes; the tests use the default.
"use strict";
const { createHttpsServer } = require("@vercel/cosmosdb-server");

const argv = process.argv.slice(2);
const option = (name) => {
  const index = argv.indexOf(name);
  return index === -1 ? undefined : argv[index + 1];
};
const port = parseInt(option("--port") || "0", 10);
const host = option("--host") || "127.0.0.1";
const keepAlive = argv.includes("--keep-alive");

const server = createHttpsServer({ keepAlive }).listen(port, host, () => {
  const address = server.address();
  console.log(`Ready to accept HTTPS connections at ${host}:${address.port}${keepAlive ? " (keep-alive)" : ""}`);
});
