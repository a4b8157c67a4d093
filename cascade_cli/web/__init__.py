"""The parent's web layer: the ASGI app, routes, envelope, auth, fast path, long poll,
metrics, group commit and the dashboard. It calls the domain and the store; nothing below it
imports it (docs/dev/architecture.md)."""
