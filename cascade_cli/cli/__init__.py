"""The ``cascade`` command line: one module per command group, each defining its typer app
(or its top-level command functions) at module level; ``main`` assembles them. Modules only a
running command needs are loaded through ``lazy`` (start-up time)."""
