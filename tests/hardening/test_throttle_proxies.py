"""The auth-failure throttle behind proxies (issue 16 point 5), through a real ``serve-parent``:
forwarded addresses are believed only from ``parent.trusted_proxies``, and failures count per
(address, key), so one bad client cannot lock out the other children at its address.

One process serves both cases: 127.0.0.1 is the trusted proxy, a client connecting from
127.0.0.2 (also loopback on Linux) is not."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from cascade_cli.config import load_settings
from cascade_cli.errors import ConfigError
from tests.hardening.helpers import setup_parent
from tests.parent_http.procs import ParentProc, write_config

pytestmark = pytest.mark.slow
P = "/api/v1/cascade"
BAD = {"Authorization": f"AK-SK CN{'c' * 32}:CS{'d' * 43}"}
LIMIT = 3


ADDRESS_LIMIT = 6


def _config(tmp_path: Path, **parent: object) -> Path:
    return write_config(tmp_path, scheduler={"enabled": False}, notify={"enabled": False},
                        auth={"failed_attempts_limit": LIMIT, "failed_attempts_window": 60,
                              "failed_attempts_address_limit": ADDRESS_LIMIT},
                        **parent)


def _wrong_key(i: int) -> dict[str, str]:
    return {"Authorization": f"AK-SK CN{i:032x}:CS{'d' * 43}"}


def _bad(c: httpx.Client, forwarded: str | None = None) -> httpx.Response:
    headers = dict(BAD)
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    return c.get(P + "/heartbeat", headers=headers)


def test_forwarded_for_only_from_trusted_proxies_and_throttle_per_key(tmp_path: Path) -> None:
    config = _config(tmp_path, trusted_proxies=["127.0.0.1"])
    _admin, heads = setup_parent(config, children=("c1",))
    with ParentProc(config) as parent, \
            httpx.Client(base_url=parent.url, timeout=30) as via_proxy, \
            httpx.Client(base_url=parent.url, timeout=30,
                         transport=httpx.HTTPTransport(local_address="127.0.0.2")) as direct:
        # Not a trusted proxy: rotating X-Forwarded-For is still one address, throttled.
        codes = [_bad(direct, f"198.51.100.{i}").status_code for i in range(LIMIT + 2)]
        assert codes == [401] * LIMIT + [429, 429], codes
        r = _bad(direct, "203.0.113.250")
        assert r.status_code == 429
        body = r.json()
        assert body["error"] == "too_many_requests"
        assert "auth-failure throttle" in body["message"] and "retry after" in body["message"]
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        # ... and the good child at that same address, with its own key, is not locked out.
        r = direct.post(P + "/heartbeat", headers=heads["c1"], json={})
        assert r.status_code == 200, r.text

        # Through the trusted proxy, each forwarded client address counts apart.
        codes = [_bad(via_proxy, "198.51.100.7").status_code for _ in range(LIMIT + 1)]
        assert codes == [401] * LIMIT + [429], codes
        assert _bad(via_proxy, "198.51.100.8").status_code == 401
        r = via_proxy.post(P + "/heartbeat", json={},
                           headers={**heads["c1"], "X-Forwarded-For": "198.51.100.7"})
        assert r.status_code == 200, r.text


def test_trusted_proxies_config(tmp_path: Path) -> None:
    config = _config(tmp_path)
    env = {"CASCADE_PARENT__TRUSTED_PROXIES": "10.0.0.5, 10.1.0.0/16"}
    assert load_settings(config, environ=env).parent.trusted_proxies == ["10.0.0.5",
                                                                          "10.1.0.0/16"]
    with pytest.raises(ConfigError) as info:
        load_settings(config, environ={"CASCADE_PARENT__TRUSTED_PROXIES": "proxy.local"})
    assert "parent.trusted_proxies" in str(info.value) + str(info.value.key)


def test_default_config_rotating_forwarded_for_and_many_keys_at_one_address(
        tmp_path: Path) -> None:
    """No ``trusted_proxies``: a client at 127.0.0.1 (which uvicorn itself would trust) rotating
    X-Forwarded-For is still one address and throttled. A client at another address cycling
    through many wrong keys gets 429 once the address-wide ceiling is passed, yet a good
    child at that same address is never refused: the ceiling applies only to requests whose
    credentials fail."""
    config = _config(tmp_path)
    _admin, heads = setup_parent(config, children=("c1",))
    with ParentProc(config) as parent, \
            httpx.Client(base_url=parent.url, timeout=30) as local, \
            httpx.Client(base_url=parent.url, timeout=30,
                         transport=httpx.HTTPTransport(local_address="127.0.0.3")) as nat:
        codes = [_bad(local, f"198.51.100.{i}").status_code for i in range(LIMIT + 2)]
        assert codes == [401] * LIMIT + [429, 429], codes

        # One client behind a NAT cycling wrong keys, never the same key twice.
        codes = [nat.get(P + "/heartbeat", headers=_wrong_key(i)).status_code
                 for i in range(ADDRESS_LIMIT * 2)]
        assert codes == [401] * ADDRESS_LIMIT + [429] * ADDRESS_LIMIT, codes
        # The good child behind the same NAT: its credentials verify, so it is served.
        for _ in range(3):
            r = nat.post(P + "/heartbeat", headers=heads["c1"], json={})
            assert r.status_code == 200, r.text
        # ... while a wrong key there still meets the address-wide ceiling.
        assert nat.get(P + "/heartbeat", headers=_wrong_key(999)).status_code == 429
