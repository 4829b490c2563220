"""service.routes: the HTTP handlers by area (answer, OpenAI-compatible, operations)."""
