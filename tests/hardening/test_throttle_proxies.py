"""The auth-failure throttle behind proxies (issue 16 point 5), through real ``serve-parent``
processes: forwarded addresses are believed only from ``parent.trusted_proxies``, and
failures count per (address, key), so one bad client cannot lock out the other children
that share its address."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.hardening.helpers import setup_parent
from tests.parent_http.procs import ParentProc, write_config

pytestmark = pytest.mark.slow
P = "/api/v1/cascade"
BAD = {"Authorization": f"AK-SK CN{'c' * 32}:CS{'d' * 43}"}
LIMIT = 3


def _config(tmp_path: Path, **parent: object) -> Path:
    return write_config(tmp_path, scheduler={"enabled": False}, notify={"enabled": False},
                        auth={"failed_attempts_limit": LIMIT, "failed_attempts_window": 60},
                        **parent)


def _bad(c: httpx.Client, forwarded: str | None = None) -> httpx.Response:
    headers = dict(BAD)
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    return c.get(P + "/heartbeat", headers=headers)


def test_untrusted_forwarded_for_is_ignored_and_one_key_cannot_lock_out_others(
        tmp_path: Path) -> None:
    config = _config(tmp_path)
    _admin, heads = setup_parent(config)
    with ParentProc(config) as parent, httpx.Client(base_url=parent.url, timeout=30) as c:
        # A local client rotating X-Forwarded-For is still one address: throttled.
        codes = [_bad(c, f"198.51.100.{i}").status_code for i in range(LIMIT + 2)]
        assert codes[:LIMIT] == [401] * LIMIT, codes
        assert codes[LIMIT:] == [429, 429], codes
        r = _bad(c, "203.0.113.250")
        assert r.status_code == 429
        body = r.json()
        assert body["error"] == "too_many_requests"
        assert "auth-failure throttle" in body["message"] and "retry after" in body["message"]
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        # ... but the good child at the same address, with its own key, is not locked out.
        r = c.post(P + "/heartbeat", headers=heads["c1"], json={})
        assert r.status_code == 200, r.text


def test_trusted_proxy_forwarded_addresses_are_counted_apart(tmp_path: Path) -> None:
    config = _config(tmp_path, trusted_proxies=["127.0.0.1"])
    _admin, heads = setup_parent(config, children=("c1",))
    with ParentProc(config) as parent, httpx.Client(base_url=parent.url, timeout=30) as c:
        codes = [_bad(c, "198.51.100.7").status_code for _ in range(LIMIT + 1)]
        assert codes == [401] * LIMIT + [429], codes
        # Another client behind the same proxy with the same wrong key: its own count.
        assert _bad(c, "198.51.100.8").status_code == 401
        # A good child behind the proxy, even at the throttled address, still gets in.
        r = c.post(P + "/heartbeat", headers={**heads["c1"],
                                                "X-Forwarded-For": "198.51.100.7"}, json={})
        assert r.status_code == 200, r.text


def test_trusted_proxies_config(tmp_path: Path) -> None:
    from cascade_cli.config import load_settings
    from cascade_cli.errors import ConfigError

    config = _config(tmp_path)
    env = {"CASCADE_PARENT__TRUSTED_PROXIES": "10.0.0.5, 10.1.0.0/16"}
    assert load_settings(config, environ=env).parent.trusted_proxies == ["10.0.0.5",
                                                                          "10.1.0.0/16"]
    with pytest.raises(ConfigError) as info:
        load_settings(config, environ={"CASCADE_PARENT__TRUSTED_PROXIES": "proxy.local"})
    assert "parent.trusted_proxies" in str(info.value) + str(info.value.key)
