"""The bridge's admin HTTP API (localhost by default; a bearer token elsewhere)."""
