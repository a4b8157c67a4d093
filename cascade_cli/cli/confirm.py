"""Asking before a destructive change. Declining is the operator's choice, not a failure:
the command says nothing was changed and exits 0."""

from __future__ import annotations

from typing import Annotated

import typer

from cascade_cli.console import make_console

YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def confirmed(question: str, yes: bool) -> bool:
    """True to go ahead. Without ``--yes`` ask on the terminal; no answer (end of input, Ctrl-C
    at the prompt) counts as no."""
    if yes:
        return True
    try:
        answer = typer.confirm(question, default=False, err=True)
    except typer.Abort:
        answer = False
    if not answer:
        make_console(stderr=True).print("not confirmed: nothing changed (pass --yes to skip "
                                        "the question)", highlight=False)
    return bool(answer)
