"""The CLI with a NUL (or another control character) in an argument, and with a template that
would never finish: one clear error line, never a traceback (issue 16, points 1 and 2)."""

from __future__ import annotations

import time

import pytest

from tests.foundation.test_cli_bad_input import assert_one_clean_error

NESTED = ("{% for i in range(99999) %}{% for j in range(99999) %}{{ i }}{% endfor %}"
          "{% endfor %}")


@pytest.fixture
def ready(cli):  # type: ignore[no-untyped-def]
    assert cli("init").exit_code == 0
    r = cli("feeds", "add", "https://example.com/f.xml", "--id", "F1")
    assert r.exit_code == 0, r.output
    return cli


@pytest.mark.parametrize(("args", "needle"), [
    (("feeds", "add", "https://example.com/a\x00b.xml"), "control character"),
    (("feeds", "add", "https://example.com/x.xml", "--id", "F\x002"), "control character"),
    (("init", "--child", "c\x01"), "invalid node name"),
    (("tasks", "add", "t1", "--feeds", "F1\x00"), "control character"),
    (("tasks", "add", "t1", "--feeds", "F1", "--cron", "0 9 * * *\x00"), "control character"),
    (("tasks", "add", "t1", "--feeds", "F1", "--headers", '{"X-A": "b\\u0000"}'),
     "line breaks"),
])
def test_control_character_in_an_identifier_is_one_clear_error(  # type: ignore[no-untyped-def]
        ready, args, needle) -> None:
    r = ready(*args)
    assert_one_clean_error(r, r.exit_code if r.exit_code in (1, 2) else -1, needle)


def test_template_that_never_ends_is_refused_quickly(ready) -> None:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    r = ready("tasks", "add", "t1", "--feeds", "F1", "--template", NESTED)
    assert time.monotonic() - started < 2
    assert_one_clean_error(r, r.exit_code if r.exit_code in (1, 2) else -1, "template")
    assert "t1" not in ready("tasks", "list").stdout
