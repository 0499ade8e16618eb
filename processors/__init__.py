"""triage's steps: one module per step."""
