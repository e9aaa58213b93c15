"""HTTP API Lambda: graphs, runs, tools and docs behind API Gateway (HTTP API, payload v2)."""
