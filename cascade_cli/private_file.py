"""Files the CLI writes that may hold a secret: created with mode 0600, never overwritten.

``cascade doctor`` fails a config file holding a secret that others can read, so what the CLI
writes must pass it from the first byte (the mode is set by ``open``, not by a later chmod).
"""

from __future__ import annotations

import os
from pathlib import Path

from cascade_cli.errors import CascadeError, UsageError


def write_private(path: Path, text: str) -> None:
    """Create ``path`` (mode 0600) with ``text``; an existing file is an error, not replaced."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{path} exists; not overwriting it",
                         hint="choose another path or remove the file first") from None
    except OSError as exc:
        raise CascadeError(f"cannot create {path}: {exc.strerror or exc}",
                           hint="check that the folder exists and is writable") from exc
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
