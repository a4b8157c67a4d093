"""The versions of the libraries whose internals Cascade uses, and the check that they fit.

A few hot paths and protocol details reach past the documented API of SQLAlchemy, FastAPI,
Starlette, uvicorn, httpx and httpcore (which attribute, and why, is written where it is used:
``web/adapters.py`` for FastAPI/Starlette/uvicorn, ``child/adapters.py`` for httpx/httpcore,
``store/prepared.py`` for SQLAlchemy's compiled statements). The adapters call ``require`` at
import with the version actually imported, so a release outside the range tested here stops the
program at start with one clear message instead of failing later, in some request, in a way
that is hard to trace. pyproject.toml caps the same ranges (a test keeps the two equal).

On an upgrade: widen the range here and in pyproject.toml together, after the adapters and the
differential tests (tests/parent_http/test_fastpath.py, tests/child/test_transport_parity.py)
pass against the new release. Framework-free on purpose (no import of those libraries): both
the parent's and the child's layers use it.
"""

from __future__ import annotations

import re

# package -> (lowest supported, first unsupported): the same bounds as pyproject.toml.
SUPPORTED: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "sqlalchemy": ((2, 0, 30), (3,)),
    "fastapi": ((0, 110), (1,)),
    "starlette": ((0, 36, 3), (2,)),
    "uvicorn": ((0, 31), (1,)),
    "httpx": ((0, 27), (1,)),
    "httpcore": ((1, 0), (2,)),
    "pydantic": ((2, 6), (3,)),
}


class UnsupportedVersion(ImportError):
    """An installed library is outside the range whose internals Cascade was tested with."""


def parse(version: str) -> tuple[int, ...]:
    """The release numbers of a version string: "2.1.0rc1" -> (2, 1, 0)."""
    m = re.match(r"\s*v?(\d+(?:\.\d+)*)", version)
    if m is None:
        raise ValueError(f"not a version: {version!r}")
    return tuple(int(part) for part in m.group(1).split("."))


def _shown(bound: tuple[int, ...]) -> str:
    return ".".join(str(part) for part in bound)


def supported_range(package: str) -> str:
    low, high = SUPPORTED[package]
    return f">={_shown(low)},<{_shown(high)}"


def require(package: str, installed: str) -> None:
    """Raise ``UnsupportedVersion`` unless ``installed`` is in ``package``'s supported range."""
    low, high = SUPPORTED[package]
    try:
        have = parse(installed)
    except ValueError:
        have = ()
    if not have or not low <= have < high:
        raise UnsupportedVersion(
            f"{package} {installed} is installed, but Cascade supports {package}"
            f"{supported_range(package)} (it uses internals of {package} that may differ in "
            f"other releases); install a supported version, e.g. "
            f"pip install '{package}{supported_range(package)}'")
