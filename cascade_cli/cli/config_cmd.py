"""``cascade config example``: the commented example configuration, shipped in the package.

An installed wheel has no clone to copy ``config.example.yaml`` from, so the file travels as
package data and this command prints it (or writes it, mode 0600, with ``--output``).
"""

import sys
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from cascade_cli.cli.context import get_ctx
from cascade_cli.private_file import write_private

EXAMPLE_NAME = "config.example.yaml"


def example_text() -> str:
    """Every configuration key with its default and what it does."""
    return (resources.files("cascade_cli") / EXAMPLE_NAME).read_text(encoding="utf-8")


app = typer.Typer(name="config", help="The configuration file: print a commented example.",
                  no_args_is_help=True)


@app.command("example")
def example(
    ctx: typer.Context,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", metavar="PATH", dir_okay=False,
        help="Write it to PATH with mode 0600 instead of printing it (an existing file "
             "is not overwritten).")] = None,
) -> None:
    """Print the example configuration: every key, its default and what it does.

    Start a config file with: cascade config example > config.yaml && chmod 600
    config.yaml (or --output config.yaml, which creates it with mode 0600). Every key
    has a default, so delete what you do not change.
    """
    text = example_text()
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    write_private(output, text)
    get_ctx(ctx).err.print(f"wrote {output} (mode 0600)", highlight=False)
