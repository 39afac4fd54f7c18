"""The roster of bridges: selection rules and the accept-or-redirect decision (pure)."""
