"""The parent's domain: dispatch, leases, runs, scheduling, templates, tokens, notifications.

Framework-free: nothing here imports FastAPI, Starlette or uvicorn. It depends only on the
store, config, clock and the shared base modules (docs/dev/architecture.md).
"""
