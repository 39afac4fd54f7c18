"""Outgoing sender: bandwidth limiter, memory safeguard and backpressure (issue 7)."""
