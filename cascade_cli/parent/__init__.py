"""The parent daemon: the one place that wires the domain (``cascade_cli.domain``) and the web
layer (``cascade_cli.web``) together and runs them on uvicorn."""
