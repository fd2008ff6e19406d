"""What the app runs on: settings, telemetry, the MAF agent and its model clients, tools (local and from MCP
servers), caller identity."""
