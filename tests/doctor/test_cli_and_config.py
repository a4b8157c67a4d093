"""The command itself (exit codes 0/1/2, JSON, --check, --role) and the configuration and
installation checks (guide problems 1 and 5)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cascade_cli.cli.main import app
from tests.doctor.conftest import child_config, diagnose, free_port, write_config

VENV_BIN = Path(sys.executable).parent


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None
        ) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
            "COLUMNS": "200", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run([sys.executable, "-m", "cascade_cli", *args], capture_output=True,
                          text=True, env={**base, **(env or {})}, cwd=cwd, timeout=60)


# --- guide problem 1: 级联客户端未初始化 ------------------------------------------------------


def test_incomplete_child_config_names_every_key(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", {"cascade": {
        "enabled": False, "node_type": "child", "api_key": "CNshort", "api_secret": ""}})
    r, report = diagnose(tmp_path, cfg, ["child.settings"])
    s = r["child.settings"]
    assert s.status == "failed"
    assert "级联客户端未初始化" in s.summary
    for key in ("cascade.enabled", "cascade.parent_api_url", "cascade.api_key",
                "cascade.api_secret"):
        assert key in s.summary
    assert "set cascade.enabled: true" in (s.fix or "")
    assert "cascade init --child NAME" in (s.fix or "")
    assert report.exit_code == 1


def test_child_settings_without_node_type_says_it_once(tmp_path: Path) -> None:
    """A child config that lacks only node_type: the summary says what is wrong, the fix what
    to do, each once (it read "fix cascade.node_type cascade.node_type: set
    cascade.node_type: child")."""
    cfg = write_config(tmp_path / "c.yaml", {"cascade": {
        "enabled": True, "parent_api_url": f"http://127.0.0.1:{free_port()}",
        "api_key": "CN" + "a1" * 16, "api_secret": "CS" + "b2" * 20}})
    r, _ = diagnose(tmp_path, cfg, ["child.settings"])
    s = r["child.settings"]
    assert s.status == "failed"
    assert s.summary == ("the child cannot start (级联客户端未初始化): cascade.node_type is "
                         "not set")
    assert s.fix == "set cascade.node_type: child" and s.details == []
    out = cli("doctor", "--check", "child.settings", env={"CASCADE_CONFIG": str(cfg),
                                                          "COLUMNS": "100", "NO_COLOR": "1"},
              cwd=tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout.count("set cascade.node_type: child") == 1, out.stdout
    assert "fix cascade.node_type" not in out.stdout
    assert "cascade.node_type: set" not in out.stdout
    # an explicit wrong value is named as it is
    cfg.write_text(cfg.read_text(encoding="utf-8") + "  node_type: parent\n", encoding="utf-8")
    r, _ = diagnose(tmp_path, cfg, ["child.settings"], role="child")
    assert "cascade.node_type is 'parent', not 'child'" in r["child.settings"].summary


def test_parent_type_config_run_as_child(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", {"cascade": {"enabled": True,
                                                         "node_type": "parent"}})
    r, report = diagnose(tmp_path, cfg, role="child")
    assert report.role == "child"
    assert "set cascade.node_type: child" in (r["child.settings"].fix or "")
    assert r["child.dns"].status == "skipped"


def test_role_detected_from_node_type(tmp_path: Path) -> None:
    cfg = child_config(tmp_path, f"http://127.0.0.1:{free_port()}")
    _, report = diagnose(tmp_path, cfg)
    names = [r.name for r in report.results]
    assert report.role == "child"
    assert "child.tcp" in names and "parent.tasks" not in names
    assert names[-1] == "install.config_resolution"


def test_malformed_yaml_exit_2_but_still_reports(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("cascade:\n  enabled: true\n node_type: child\n")
    proc = cli("doctor", "--config", str(cfg), "--json")
    assert proc.returncode == 2, proc.stderr
    out = json.loads(proc.stdout)
    by = {c["name"]: c for c in out["checks"]}
    assert by["config.parse"]["status"] == "failed"
    assert "malformed YAML at line 3" in by["config.parse"]["summary"]
    assert "YAML syntax" in by["config.parse"]["fix"]
    assert by["install.import"]["status"] == "ok"
    assert out["exit_code"] == 2


def test_wrong_value_names_the_key(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", {"cascade": {"node_type": "child",
                                                         "heartbeat_interval": -1}})
    r, report = diagnose(tmp_path, cfg)
    assert r["config.parse"].status == "failed"
    assert "cascade.heartbeat_interval" in r["config.parse"].summary
    assert "key: cascade.heartbeat_interval" in (r["config.parse"].fix or "")
    assert report.role == "child"  # read from the broken file anyway
    assert report.exit_code == 2


def test_config_path_missing(tmp_path: Path) -> None:
    r, _ = diagnose(tmp_path, tmp_path / "nope.yaml", ["config.file"])
    assert r["config.file"].status == "failed"
    assert "given with --config" in r["config.file"].summary
    r, _ = diagnose(tmp_path, None, ["config.file"],
                    environ={"CASCADE_CONFIG": str(tmp_path / "nope.yaml")})
    assert r["config.file"].status == "failed"
    assert "unset it" in (r["config.file"].fix or "")


def test_unknown_key_is_a_warning(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", {"cascade": {"enabeld": True}})
    r, _ = diagnose(tmp_path, cfg, ["config.parse"])
    assert r["config.parse"].status == "warning"
    assert "cascade.enabeld" in r["config.parse"].summary


def test_world_readable_config_with_secret(tmp_path: Path) -> None:
    cfg = child_config(tmp_path, "http://127.0.0.1:1")
    os.chmod(cfg, 0o644)
    r, report = diagnose(tmp_path, cfg, ["config.permissions"])
    perm = r["config.permissions"]
    assert perm.status == "failed"
    assert "readable by every user" in perm.summary and "cascade.api_secret" in perm.summary
    assert perm.fix is not None and perm.fix.startswith(f"chmod 600 {cfg}")
    assert report.exit_code == 1
    os.chmod(cfg, 0o640)
    r, _ = diagnose(tmp_path, cfg, ["config.permissions"])
    assert r["config.permissions"].status == "warning"
    os.chmod(cfg, 0o600)
    r, _ = diagnose(tmp_path, cfg, ["config.permissions"])
    assert r["config.permissions"].status == "ok"


def test_database_password_counts_as_secret(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "p.yaml", {"database": {"url": "postgresql://u:pw@db/c"}},
                       mode=0o604)
    r, _ = diagnose(tmp_path, cfg, ["config.permissions"])
    assert r["config.permissions"].status == "failed"
    assert "database.url (password)" in r["config.permissions"].summary


# --- guide problem 5: imports, PATH, running from another folder ---------------------------


def test_local_config_found_only_from_its_folder(tmp_path: Path) -> None:
    local = child_config(tmp_path, "http://127.0.0.1:1").rename(tmp_path / "config.yaml")
    r, _ = diagnose(tmp_path, None, ["config.file", "install.config_resolution"])
    assert r["config.file"].data["reason"] == "./config.yaml"
    res = r["install.config_resolution"]
    assert res.status == "warning"
    assert "falls back to built-in defaults" in res.summary
    assert f"export CASCADE_CONFIG={local}" in (res.fix or "")
    other = tmp_path / "elsewhere"
    other.mkdir()
    r, _ = diagnose(other, None, ["config.file"])
    assert r["config.file"].data["reason"] == "defaults"


def test_cascade_config_shadows_local_file(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("cascade: {}\n")
    real = child_config(tmp_path, "http://127.0.0.1:1")
    r, _ = diagnose(tmp_path, None, ["install.config_resolution"],
                    environ={"CASCADE_CONFIG": str(real), "CASCADE_API_KEY": "CNx"})
    res = r["install.config_resolution"]
    assert res.status == "warning"
    assert f"{tmp_path / 'config.yaml'} is ignored: CASCADE_CONFIG points to {real}" in res.summary
    assert "remove or rename" in (res.fix or "")
    assert any("CASCADE_API_KEY" in d for d in res.details)
    r, _ = diagnose(tmp_path / "..", None, ["install.config_resolution"],
                    environ={"CASCADE_CONFIG": str(real)})
    assert r["install.config_resolution"].status == "ok"


def test_entry_point_on_path_or_not(tmp_path: Path) -> None:
    r, _ = diagnose(tmp_path, None, ["install.entry_point"], environ={"PATH": str(tmp_path)})
    ep = r["install.entry_point"]
    assert ep.status == "warning"
    assert "-m cascade_cli" in (ep.fix or "")
    if (VENV_BIN / "cascade").exists():
        assert f"export PATH={VENV_BIN}:$PATH" in (ep.fix or "")
        r, _ = diagnose(tmp_path, None, ["install.entry_point"], environ={"PATH": str(VENV_BIN)})
        assert r["install.entry_point"].status == "ok"


def test_package_imports_from_any_folder(tmp_path: Path) -> None:
    proc = cli("doctor", "--check", "install.import", "--json", cwd=tmp_path)
    out = json.loads(proc.stdout)
    assert out["checks"][0]["status"] == "ok", out
    assert out["checks"][0]["data"]["modules"] > 20


def test_broken_module_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cascade_cli

    pkg = tmp_path / "extra"
    pkg.mkdir()
    (pkg / "broken_doctor_probe.py").write_text("import core  # the original's mistake\n")
    monkeypatch.setattr(cascade_cli, "__path__", [*cascade_cli.__path__, str(pkg)])
    r, _ = diagnose(tmp_path, None, ["install.import"])
    imp = r["install.import"]
    assert imp.status == "failed"
    assert "No module named 'core'" in imp.summary
    assert "pip install" in (imp.fix or "")
    sys.modules.pop("cascade_cli.broken_doctor_probe", None)


# --- the command ---------------------------------------------------------------------------


def test_cli_json_table_exit_codes_and_check_selection(tmp_path: Path) -> None:
    cfg = child_config(tmp_path, f"http://127.0.0.1:{free_port()}")
    runner = CliRunner()
    res = runner.invoke(app, ["doctor", "--config", str(cfg), "--json", "--check",
                              "child.tcp,config.file"])
    assert res.exit_code == 1, res.output
    out = json.loads(res.stdout)
    assert [c["name"] for c in out["checks"]] == ["config.file", "child.tcp"]
    assert out["counts"]["failed"] == 1
    res = runner.invoke(app, ["--config", str(cfg), "doctor", "--check", "config"])
    assert res.exit_code == 0, res.output
    assert "config.permissions" in res.stdout and "install.import" not in res.stdout
    res = runner.invoke(app, ["doctor", "--check", "nosuch"])
    assert res.exit_code == 2
    res = runner.invoke(app, ["doctor", "--role", "grandparent"])
    assert res.exit_code == 2


def test_table_shows_fix(tmp_path: Path) -> None:
    cfg = child_config(tmp_path, f"http://127.0.0.1:{free_port()}")
    proc = cli("doctor", "--config", str(cfg), "--check", "child.tcp")
    assert proc.returncode == 1
    assert "connection refused" in proc.stdout
    assert "cascade serve-parent" in proc.stdout
    assert "1 failed" in proc.stdout
