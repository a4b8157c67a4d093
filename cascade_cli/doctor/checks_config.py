"""Configuration and installation checks (guide problems 1 and 5), for every role."""

from __future__ import annotations

import importlib
import os
import pkgutil
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

import cascade_cli
from cascade_cli.doctor.context import DoctorContext
from cascade_cli.doctor.result import FAILED, OK, SKIPPED, WARNING, CheckResult, Findings
from cascade_cli.store.engine import url_has_password

RESOLUTION_ORDER = ("--config PATH, else $CASCADE_CONFIG, else ./config.yaml in the current "
                    "folder, else built-in defaults")


def _env_keys(ctx: DoctorContext) -> list[str]:
    return sorted(k for k in ctx.environ if k.startswith("CASCADE_") and k != "CASCADE_CONFIG")


# --- config.file ---------------------------------------------------------------------------


def check_config_file(ctx: DoctorContext) -> CheckResult:
    src = ctx.source
    name = "config.file"
    data: dict[str, Any] = {"path": str(src.path) if src.path else None, "reason": src.reason,
                            "resolution_order": RESOLUTION_ORDER}
    why = {"--config": "given with --config",
           "CASCADE_CONFIG": "named by the CASCADE_CONFIG environment variable",
           "./config.yaml": f"found as config.yaml in the current folder ({ctx.cwd})",
           "defaults": "no --config, no CASCADE_CONFIG and no ./config.yaml"}[src.reason]
    details = [f"resolution order: {RESOLUTION_ORDER}"]
    if src.path is None:
        env = _env_keys(ctx)
        if env:
            details.append("settings come from environment variables: " + ", ".join(env))
        if ctx.role in ("child", "unknown") and not env:
            return CheckResult(
                name, WARNING, f"no configuration file: built-in defaults ({why})", details,
                "create a config.yaml with the cascade: block (enabled: true, node_type: child, "
                "parent_api_url, api_key, api_secret) and pass it with --config PATH or "
                "export CASCADE_CONFIG=/absolute/path/config.yaml", data)
        return CheckResult(name, OK, f"no configuration file: built-in defaults ({why})",
                           details, None, data)
    if not src.path.exists():
        fix = ("pass an existing file to --config" if src.reason == "--config"
               else "point CASCADE_CONFIG at an existing file, or unset it")
        return CheckResult(name, FAILED, f"configuration file not found: {src.path} ({why})",
                           details, fix, data)
    if not src.path.is_file():
        return CheckResult(name, FAILED, f"configuration path is not a file: {src.path}",
                           details, "point --config / CASCADE_CONFIG at the YAML file", data)
    return CheckResult(name, OK, f"{src.path} ({why})", details, None, data)


# --- config.role ---------------------------------------------------------------------------

SET_ROLE = ("say which host this is: on a child host put 'node_type: child' in the cascade: "
            "block (the block 'cascade init --child NAME' prints on the parent has it); on the "
            "parent host 'cascade: {node_type: parent}'; or run 'cascade doctor --role child' "
            "(or --role parent) to diagnose meanwhile")


def check_config_role(ctx: DoctorContext) -> CheckResult:
    name = "config.role"
    role, reason = ctx.role, ctx.role_reason
    data = {"role": role, "reason": reason}
    if role == "unknown":
        return CheckResult(name, FAILED, f"the role of this host is unknown: {reason}",
                           ["only the configuration and installation checks ran"], SET_ROLE,
                           data)
    if role == "child" and reason.startswith("inferred"):
        return CheckResult(name, WARNING, f"child, {reason}: 'cascade run-child' refuses to "
                           "start until it is set", [], "set cascade.node_type: child", data)
    return CheckResult(name, OK, f"{role} ({reason})", data=data)


# --- config.parse --------------------------------------------------------------------------


def check_config_parse(ctx: DoctorContext) -> CheckResult:
    name = "config.parse"
    err = ctx.config_error
    if err is not None:
        fix = err.hint or "fix the configuration"
        if err.key:
            fix = f"{fix} (key: {err.key})"
        return CheckResult(name, FAILED, err.message, [], fix,
                           {"key": err.key})
    settings = ctx.settings
    assert settings is not None
    details = [f"role: {settings.cascade.node_type} (cascade.node_type)",
               f"data_dir: {settings.data_dir}"]
    if settings.warnings:
        return CheckResult(name, WARNING, settings.warnings[0], details + list(settings.warnings),
                           "remove or correct the unknown key(s) named above; "
                           "config.example.yaml lists every valid key",
                           {"warnings": list(settings.warnings)})
    return CheckResult(name, OK, "parsed and valid", details)


# --- config.permissions --------------------------------------------------------------------


def _secrets_in_file(path: Path) -> list[str]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except Exception:
        return []
    if not isinstance(data, dict):
        return []
    found = []
    cascade = data.get("cascade") or {}
    if isinstance(cascade, dict) and cascade.get("api_secret"):
        found.append("cascade.api_secret")
    database = data.get("database") or {}
    if (isinstance(database, dict) and isinstance(database.get("url"), str)
            and url_has_password(database["url"])):
        found.append("database.url (password)")
    return found


def check_config_permissions(ctx: DoctorContext) -> CheckResult:
    name = "config.permissions"
    path = ctx.source.path
    if path is None or not path.is_file():
        return CheckResult(name, SKIPPED, "no configuration file")
    if os.name != "posix":
        return CheckResult(name, SKIPPED, "file modes are not checked on this system")
    mode = stat.S_IMODE(path.stat().st_mode)
    secrets = _secrets_in_file(path)
    data = {"path": str(path), "mode": oct(mode), "secrets": secrets}
    if not secrets:
        return CheckResult(name, OK, f"{path} holds no secret (mode {oct(mode)})", data=data)
    fix = (f"chmod 600 {path} (or keep the secret out of the file: "
           "CASCADE_API_SECRET / CASCADE_DATABASE_URL in the service environment)")
    if mode & 0o007:
        return CheckResult(name, FAILED, f"{path} is readable by every user (mode {oct(mode)}) "
                           f"and holds {', '.join(secrets)}", [], fix, data)
    if mode & 0o070:
        return CheckResult(name, WARNING, f"{path} is readable by its group (mode {oct(mode)}) "
                           f"and holds {', '.join(secrets)}", [], fix, data)
    return CheckResult(name, OK, f"{path} holds secrets and is private (mode {oct(mode)})",
                       data=data)


# --- installation (guide problem 5) --------------------------------------------------------

_SKIP_MODULES = ("cascade_cli.__main__", "cascade_cli.store.migrations")


def check_install_import(ctx: DoctorContext) -> CheckResult:
    name = "install.import"
    failures: list[str] = []
    count = 0
    for info in pkgutil.walk_packages(cascade_cli.__path__, "cascade_cli."):
        if info.name.startswith(_SKIP_MODULES):
            continue
        count += 1
        try:
            importlib.import_module(info.name)
        except Exception as exc:  # an import failure of any kind is the finding
            failures.append(f"{info.name}: {type(exc).__name__}: {exc}")
    where = Path(cascade_cli.__file__).parent
    data = {"package": str(where), "python": sys.executable, "modules": count,
            "version": cascade_cli.__version__}
    if failures:
        return CheckResult(
            name, FAILED, f"{len(failures)} module(s) fail to import: {failures[0]}", failures,
            f"reinstall the package and its dependencies into this Python: "
            f"{sys.executable} -m pip install --upgrade cascade-cli (or 'pip install -e .' in a "
            "checkout); Cascade never needs a particular working folder to import", data)
    return CheckResult(name, OK, f"cascade_cli {cascade_cli.__version__}: {count} modules import "
                       f"from {where}", [f"python: {sys.executable}"], None, data)


def check_install_entry_point(ctx: DoctorContext) -> CheckResult:
    name = "install.entry_point"
    path_var = ctx.environ.get("PATH", os.defpath)
    found = shutil.which("cascade", path=path_var)
    here = Path(sys.executable).parent / "cascade"
    data = {"found": found, "this_installation": str(here) if here.exists() else None}
    if found is None:
        fix = (f"add {here.parent} to PATH (export PATH={here.parent}:$PATH)" if here.exists()
               else "install the package with pip (it creates the 'cascade' command)")
        return CheckResult(name, WARNING, "the 'cascade' command is not on PATH",
                           [f"meanwhile '{sys.executable} -m cascade_cli ...' works the same"],
                           fix + f", or run '{sys.executable} -m cascade_cli'", data)
    if here.exists() and Path(found).resolve() != here.resolve():
        return CheckResult(name, WARNING, f"'cascade' on PATH is {found}, another installation "
                           f"than this one ({here})", [],
                           f"put {here.parent} first on PATH, or uninstall the other copy", data)
    return CheckResult(name, OK, f"'cascade' on PATH: {found}", data=data)


def check_config_resolution(ctx: DoctorContext) -> CheckResult:
    """Would the same config be found from another folder (cron, systemd, another shell)?"""
    name = "install.config_resolution"
    f = Findings()
    src = ctx.source
    env_cfg = ctx.environ.get("CASCADE_CONFIG")
    local = ctx.cwd / "config.yaml"
    f.note(f"resolution order: {RESOLUTION_ORDER}")
    if src.reason == "--config" and env_cfg and Path(env_cfg).expanduser().absolute() != src.path:
        f.add(WARNING, f"CASCADE_CONFIG ({env_cfg}) is ignored because --config was given",
              "use one of them: commands run without --config read CASCADE_CONFIG instead")
    if src.reason in ("--config", "CASCADE_CONFIG") and local.is_file() \
            and local.absolute() != src.path:
        f.add(WARNING, f"{local} is ignored: {src.reason} points to {src.path}",
              f"remove or rename {local} (or point {src.reason} at it) so that only one "
              "configuration file is in play")
    if src.reason == "--config" and not env_cfg:
        f.note("found through --config: commands started without it (a service, cron) read "
               f"./config.yaml of their folder or defaults; export CASCADE_CONFIG={src.path} "
               "there")
    if src.reason == "./config.yaml":
        f.add(WARNING, f"the configuration is found only because the current folder is {ctx.cwd}: "
              "run from another folder (cron, systemd, another shell) cascade silently falls "
              "back to built-in defaults",
              f"export CASCADE_CONFIG={src.path} (or pass --config {src.path}) wherever cascade "
              "runs")
    if src.reason == "defaults":
        f.note(f"searched: --config (not given), CASCADE_CONFIG (not set), {local} (absent)")
    env_keys = _env_keys(ctx)
    if env_keys:
        f.note("CASCADE_* variables override the file: " + ", ".join(env_keys))
    if ctx.settings is not None and src.path is not None:
        f.note(f"relative paths in the file resolve against {src.path.parent} "
               f"(data_dir = {ctx.settings.data_dir}), whatever the current folder")
    where = str(src.path) if src.path else "built-in defaults"
    return f.result(name, f"the same configuration ({where}) is found from any folder",
                    {"reason": src.reason, "path": str(src.path) if src.path else None,
                     "env_overrides": env_keys})
