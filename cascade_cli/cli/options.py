"""Option types shared by the listing commands, so ``--json`` and ``--wide`` read the same
everywhere."""

from __future__ import annotations

from typing import Annotated

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON alone on standard output.")]
WideOpt = Annotated[bool, typer.Option(
    "--wide", help="Full ids and ISO times instead of 8-character ids and relative times.")]
