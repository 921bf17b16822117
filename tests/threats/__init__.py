"""The threat-model suite: one module per threat, named after it; SECURITY.md maps each to its defence."""
