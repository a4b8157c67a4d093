"""One duration parser for the CLI (issue 16 point 4): bounded, same rules for --ttl and
--older-than, and no traceback for absurd values in a real process."""

from __future__ import annotations

from pathlib import Path

import pytest

from cascade_cli.durations import MAX_SECONDS, parse_seconds
from cascade_cli.errors import InvalidInput
from tests.hardening.helpers import setup_parent
from tests.parent_http.procs import cli, write_config


@pytest.mark.parametrize("text,seconds", [
    ("3600", 3600), ("45s", 45), ("90m", 5400), ("12h", 43200), ("7d", 7 * 86400),
    ("2w", 14 * 86400), ("1d12h", 129600), (" 1.5h ", 5400), ("1D 12H", 129600),
    ("1", 1), ("1.5", 1.5), ("100w", 100 * 7 * 86400)])
def test_accepted(text: str, seconds: float) -> None:
    assert parse_seconds(text, field="ttl") == seconds


@pytest.mark.parametrize("text", ["", "x", "d", "30x", "-1d", "0", "0d", "3d garbage",
                                  "1e9", "nan", "inf", "1" * 400, "d1", "1d-2h", "1.2.3h"])
def test_refused(text: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_seconds(text, field="older_than")
    assert info.value.field == "older_than"


@pytest.mark.parametrize("text", ["0.0000001", "0.5", "0.9s", "0.01m"])
def test_too_short(text: str) -> None:
    """A token that expires at once (``--ttl 0.0000001``) is a mistake, not a request."""
    with pytest.raises(InvalidInput, match="too short") as info:
        parse_seconds(text, field="ttl")
    assert "at least 1 s" in info.value.message


@pytest.mark.parametrize("text", ["100000000w", "999999999999w", "5300w", f"{MAX_SECONDS + 1}"])
def test_bounded(text: str) -> None:
    with pytest.raises(InvalidInput, match="too long"):
        parse_seconds(text, field="ttl")


@pytest.mark.slow
@pytest.mark.parametrize("args,accepted", [
    (("token", "create", "--ttl", "100000000w"), False),
    (("token", "create", "--ttl", "1d12h"), True),
    (("purge", "--older-than", "999999999999w", "--dry-run"), False),
    (("token", "create", "--ttl", "0.0000001"), False),
])
def test_cli_process(tmp_path: Path, args: tuple[str, ...], accepted: bool) -> None:
    config = write_config(tmp_path)
    setup_parent(config, children=())  # schema and admin secret, in-process: faster
    r = cli(config, *args, check=False)
    assert "Traceback" not in r.stderr and "OverflowError" not in r.stderr, r.stderr
    if accepted:
        assert r.returncode == 0, r.stderr
    else:
        assert r.returncode == 2, (r.returncode, r.stderr)
        assert ("too long" in r.stderr and "100 years" in r.stderr) or \
            ("too short" in r.stderr and "at least 1 s" in r.stderr), r.stderr
        assert not r.stdout, r.stdout  # no token printed


@pytest.mark.slow
@pytest.mark.parametrize("interval", ["1e308", "inf"])
def test_events_follow_interval_bounded(tmp_path: Path, interval: str) -> None:
    """``events --follow --interval 1e308`` used to end in an OverflowError traceback from
    time.sleep; out-of-range and non-finite intervals are a usage error (exit 2)."""
    config = write_config(tmp_path)
    setup_parent(config, children=())
    r = cli(config, "events", "--follow", "--interval", interval, check=False)
    assert "Traceback" not in r.stderr and "OverflowError" not in r.stderr, r.stderr
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "--interval" in r.stderr, r.stderr
