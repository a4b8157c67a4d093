"""Private-API use of the web and HTTP libraries stays in the adapter modules, which check the
installed versions at import against the ranges pyproject.toml caps."""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path
from types import ModuleType

import fastapi
import httpcore
import httpx
import pytest
import uvicorn

from cascade_cli import compat
from cascade_cli.child import adapters as child_adapters
from cascade_cli.web import adapters as web_adapters

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "cascade_cli"


def test_installed_versions_are_supported() -> None:
    import pydantic
    import sqlalchemy
    import starlette

    for name, module_version in (("fastapi", fastapi.__version__),
                                 ("starlette", starlette.__version__),
                                 ("uvicorn", uvicorn.__version__),
                                 ("httpx", httpx.__version__),
                                 ("httpcore", httpcore.__version__),
                                 ("sqlalchemy", sqlalchemy.__version__),
                                 ("pydantic", pydantic.VERSION)):
        compat.require(name, module_version)


@pytest.mark.parametrize("package,version", [
    ("fastapi", "1.0.0"), ("fastapi", "0.109.2"), ("httpx", "1.0.0b1"), ("sqlalchemy", "3.0"),
    ("sqlalchemy", "1.4.52"), ("uvicorn", "garbage"), ("starlette", "2.0.0"),
])
def test_an_unsupported_version_is_one_clear_error(package: str, version: str) -> None:
    with pytest.raises(compat.UnsupportedVersion) as info:
        compat.require(package, version)
    message = str(info.value)
    assert f"{package} {version} is installed" in message
    assert f"supports {package}{compat.supported_range(package)}" in message
    assert isinstance(info.value, ImportError)


@pytest.mark.parametrize("version,expected", [
    ("2.1.9", (2, 1, 9)), ("0.165.0", (0, 165, 0)), ("1.0.0rc1", (1, 0, 0)), ("2", (2,)),
])
def test_versions_are_read_by_their_release_numbers(version: str,
                                                    expected: tuple[int, ...]) -> None:
    assert compat.parse(version) == expected


def test_bounds_are_inclusive_below_and_exclusive_above() -> None:
    compat.require("fastapi", "0.110")
    compat.require("fastapi", "0.110.0")
    compat.require("sqlalchemy", "2.0.30")
    compat.require("sqlalchemy", "2.99")
    with pytest.raises(compat.UnsupportedVersion):
        compat.require("sqlalchemy", "3.0.0")


def test_pyproject_caps_the_same_ranges() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    declared = {}
    for dep in deps:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", dep.split(";")[0].strip())
        assert m is not None, dep
        declared[m.group(1).lower()] = m.group(2).replace(" ", "")
    for package in compat.SUPPORTED:
        assert declared.get(package) == compat.supported_range(package), (
            f"pyproject.toml declares {package}{declared.get(package)}; "
            f"compat.SUPPORTED says {compat.supported_range(package)}")


@pytest.mark.parametrize("module,library,package", [
    (web_adapters, fastapi, "fastapi"), (web_adapters, uvicorn, "uvicorn"),
    (child_adapters, httpx, "httpx"), (child_adapters, httpcore, "httpcore"),
])
def test_the_adapters_refuse_an_unsupported_release_at_import(
        monkeypatch: pytest.MonkeyPatch, module: ModuleType, library: ModuleType,
        package: str) -> None:
    monkeypatch.setattr(library, "__version__", "99.0.0")
    try:
        with pytest.raises(compat.UnsupportedVersion, match=f"{package} 99.0.0 is installed"):
            importlib.reload(module)
    finally:
        monkeypatch.undo()
        importlib.reload(module)


# Attributes and modules outside the libraries' documented API: used only in the adapters
# (SQLAlchemy's, in store/prepared.py, are the store's: see docs/operations.md).
_PRIVATE = re.compile(
    r"_native_telemetry|[.\"]_network_backend\b|(?<!self)\._pool\b|[.\"]_mounts\b"
    r"|(?<!self)\._transport\b|\"_transport\"|\"_pool\"|uvicorn\.protocols|Starlette\.__call__|\.body_field\b|\bservers\[0\]"
    r"|scope\[\"route\"\]|scope\.get\(\"route\"\)|httpx\._|httpcore\._|fastapi\._|starlette\._")
_ADAPTERS = {PACKAGE / "web" / "adapters.py", PACKAGE / "child" / "adapters.py"}


def test_private_api_is_used_only_in_the_adapters() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path in _ADAPTERS or "migrations" in path.parts:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if _PRIVATE.search(line.split("#", 1)[0]):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "private API outside the adapters:\n" + "\n".join(found)
