"""The OAuth 2.1 side of the console: DOT's validator, scopes backend and views, made policy-aware."""
