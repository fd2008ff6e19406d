"""What the app runs on: settings, telemetry, the MAF agent and its model clients, tools, caller identity."""
