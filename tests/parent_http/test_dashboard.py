"""The web dashboard (``/ui``) over HTTP: login, cookie, CSRF, roles, views, actions, languages,
the sub-path behind a proxy, and ``/docs`` without a CDN. The browser test is
tests/dashboard/test_browser.py; this file proves each rule on every route."""

from __future__ import annotations

import re

import httpx
import pytest

from cascade_cli.domain import tokens
from cascade_cli.store.engine import Store
from cascade_cli.web.app import create_app
from cascade_cli.web.ui.routes import build_router
from tests.parent_http.conftest import (
    ADMIN_SECRET,
    Api,
    P,
    envelope_err,
    envelope_ok,
    make_settings,
)

pytestmark = pytest.mark.anyio

CSRF_RE = re.compile(r'data-csrf="([0-9a-f]{64})"')


async def login(api: Api, client: httpx.AsyncClient | None = None,
                prefix: str = "") -> tuple[httpx.AsyncClient, str, str]:
    """Log a client in through the form; the client (with its cookie), token and CSRF."""
    client = client or api.client
    tok = api.token()
    r = await client.post(prefix + "/ui/login", data={"token": tok})
    assert r.status_code == 303, r.text
    assert r.headers["location"] == prefix + "/ui/"
    page = await client.get(prefix + "/ui/")
    assert page.status_code == 200, page.text
    m = CSRF_RE.search(page.text)
    assert m, page.text[:500]
    return client, tok, m.group(1)


def ui_routes() -> list[tuple[str, str]]:
    """Every (method, path) the dashboard serves, with sample path parameters."""
    out = []
    for route in build_router().routes:
        path = getattr(route, "path", "")
        if not path.startswith("/ui"):
            continue
        sample = (path.replace("{name}", "app.js").replace("{code}", "zh")
                  .replace("{node_id}", "n1").replace("{action}", "disable")
                  .replace("{task_id}", "t1").replace("{run_id}", "r1")
                  .replace("{rest:path}", "no/such/page"))
        for method in sorted(route.methods - {"HEAD"}):
            out.append((method, sample))
    return out


async def test_root_redirects_and_pages_need_a_login(api: Api) -> None:
    r = await api.client.get("/")
    assert r.status_code == 307 and r.headers["location"] == "/ui/"
    r = await api.client.get("/ui/")
    assert r.status_code == 303 and r.headers["location"] == "/ui/login"
    for path in ("/ui/nodes", "/ui/runs", "/ui/feeds", "/ui/tasks", "/ui/runs/x"):
        r = await api.client.get(path)
        assert r.status_code == 303, path
        envelope_err(await api.client.get(path, params={"live": "1"}), 401, "login_required")
    form = await api.client.get("/ui/login")
    assert form.status_code == 200 and 'name="token"' in form.text
    assert "cdn" not in form.text.lower() and "http://" not in form.text.replace(
        "http://www.w3.org", "")


async def test_login_sets_a_strict_httponly_cookie_and_logout_keeps_the_token(api: Api) -> None:
    tok = api.token()
    r = await api.client.post("/ui/login", data={"token": tok})
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("cascade_ui=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    page = await api.client.get("/ui/")
    assert page.status_code == 200 and "Nodes online" in page.text
    csrf = CSRF_RE.search(page.text).group(1)
    # logout needs the CSRF token too
    envelope_err(await api.client.post("/ui/logout", data={"csrf": "0" * 64}), 403,
                 "csrf_failed")
    r = await api.client.post("/ui/logout", data={"csrf": csrf})
    assert r.status_code == 303 and r.headers["location"] == "/ui/login"
    assert 'cascade_ui=""' in r.headers["set-cookie"] or "Max-Age=0" in r.headers["set-cookie"]
    assert (await api.client.get("/ui/")).status_code == 303
    # the token itself was not revoked by the logout
    envelope_ok(await api.admin("GET", "/nodes", tok))


async def test_bad_tokens_and_node_credentials_never_log_in(api: Api) -> None:
    creds = api.node("c1")
    for pasted in (f"{creds.api_key}:{creds.api_secret}", creds.api_secret, creds.api_key,
                   f"AK-SK {creds.api_key}:{creds.api_secret}"):
        r = await api.client.post("/ui/login", data={"token": pasted})
        assert r.status_code == 403 and "node credential" in r.text, pasted
        assert "set-cookie" not in r.headers
    r = await api.client.post("/ui/login", data={"token": "eyJ.not.a-token"})
    assert r.status_code == 401 and "invalid admin token" in r.text
    r = await api.client.post("/ui/login", data={"token": "x" * 5000})
    assert r.status_code == 401
    expired = api.token(ttl=10)
    api.clock.advance(11)
    r = await api.client.post("/ui/login", data={"token": expired})
    assert r.status_code == 401 and "expired" in r.text


async def test_node_credentials_get_403_on_every_dashboard_path(api: Api) -> None:
    creds = api.node("c1")
    routes = ui_routes()
    assert len(routes) >= 12
    assert {("POST", "/ui/nodes/n1/disable"), ("POST", "/ui/tasks/t1/dispatch"),
            ("GET", "/ui/static/app.js"), ("POST", "/ui/login")} <= set(routes)
    for method, path in routes:
        for headers in (api.plain(creds), api.signed(creds, method, path)):
            r = await api.client.request(method, path, headers=headers)
            envelope_err(r, 403, "admin_required")
    # and with a valid admin session cookie as well: the node credential still wins
    client, _tok, csrf = await login(api)
    r = await client.get("/ui/nodes", headers=api.plain(creds))
    envelope_err(r, 403, "admin_required")


async def test_node_credentials_get_403_on_made_up_dashboard_paths(api: Api) -> None:
    creds = api.node("c1")
    made_up = [("GET", "/ui/nope"), ("GET", "/ui/runs/x/y"), ("POST", "/ui/nodes/c1"),
               ("DELETE", "/ui/nodes/c1/disable/again"), ("GET", "/ui/static/a/b.js"),
               ("PUT", "/ui/tasks")]
    for method, path in made_up:
        for headers in (api.plain(creds), api.signed(creds, method, path)):
            r = await api.client.request(method, path, headers=headers)
            envelope_err(r, 403, "admin_required")
        # anyone else: a plain 404, whether logged in or not
        envelope_err(await api.client.request(method, path), 404, "not_found")
    client, _tok, _csrf = await login(api)
    envelope_err(await client.get("/ui/nope"), 404, "not_found")


async def test_actions_need_the_csrf_token(api: Api) -> None:
    creds = api.node("c1")
    client, tok, csrf = await login(api)
    task_id = await api.setup_task(tok, n_feeds=1)
    actions = [f"/ui/nodes/c1/{a}" for a in ("enable", "disable", "rotate", "revoke")]
    actions += [f"/ui/tasks/{task_id}/dispatch", "/ui/logout"]
    for path in actions:
        for bad in ({}, {"X-CSRF-Token": "0" * 64}, {"X-CSRF-Token": csrf[:-1]}):
            envelope_err(await client.post(path, headers=bad), 403, "csrf_failed")
    # nothing happened: the node still works, no run was created, the session is still open
    envelope_ok(await api.as_node(creds, "POST", "/heartbeat", json={}))
    assert "/ui/runs/" not in (await client.get("/ui/runs", params={"live": "1"})).text
    assert (await client.get("/ui/")).status_code == 200
    # a CSRF token belongs to one admin token: another session's does not fit
    other = httpx.AsyncClient(transport=api.client._transport, base_url="http://parent")
    async with other:
        _c, _t, other_csrf = await login(api, other)
        assert other_csrf != csrf
        envelope_err(await client.post("/ui/nodes/c1/disable",
                                       headers={"X-CSRF-Token": other_csrf}), 403, "csrf_failed")
    # without any session: 401, never the action (logging out without a session just goes
    # to the login form)
    anon = httpx.AsyncClient(transport=api.client._transport, base_url="http://parent")
    async with anon:
        for path in actions[:-1]:
            envelope_err(await anon.post(path, headers={"X-CSRF-Token": csrf}), 401,
                         "login_required")
        r = await anon.post("/ui/logout", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 303 and r.headers["location"] == "/ui/login"
        # a node credential instead of a session: 403, whatever the CSRF token
        for path in actions:
            envelope_err(await anon.post(path, headers={"X-CSRF-Token": csrf,
                                                        **api.plain(creds)}), 403,
                         "admin_required")


async def test_node_actions_enable_disable_rotate_revoke(api: Api) -> None:
    creds = api.node("c1")
    client, tok, csrf = await login(api)
    h = {"X-CSRF-Token": csrf}
    data = envelope_ok(await client.post("/ui/nodes/c1/disable", headers=h))
    assert data == {"id": data["id"], "name": "c1", "enabled": False}
    envelope_err(await api.as_node(creds, "POST", "/heartbeat", json={}), 403, "node_disabled")
    page = await client.get("/ui/nodes", params={"live": "1"})
    assert 'data-status="disabled"' in page.text and "<html" not in page.text
    envelope_ok(await client.post(f"/ui/nodes/{data['id']}/enable", headers=h))
    envelope_ok(await api.as_node(creds, "POST", "/heartbeat", json={}))
    rotated = await client.post("/ui/nodes/c1/rotate", headers=h)
    new = envelope_ok(rotated)
    assert rotated.headers["cache-control"] == "no-store"  # it carries a secret
    assert new["api_key"] == creds.api_key and new["api_secret"] != creds.api_secret
    assert "shown only once" in rotated.json()["message"]
    fresh = type(creds)(new["api_key"], new["api_secret"])
    envelope_ok(await api.as_node(fresh, "POST", "/heartbeat", json={}))
    # the rotated secret is never rendered into a page
    assert new["api_secret"] not in (await client.get("/ui/nodes")).text
    envelope_ok(await client.post("/ui/nodes/c1/revoke", headers=h))
    envelope_err(await api.as_node(fresh, "POST", "/heartbeat", json={}), 401)
    envelope_err(await client.post("/ui/nodes/c1/explode", headers=h), 404)
    envelope_err(await client.post("/ui/nodes/nope/disable", headers=h), 404)
    # a script with a Bearer header needs no CSRF token (no ambient credential)
    envelope_ok(await api.client.post("/ui/nodes/c1/disable", headers=api.bearer(tok),
                                      cookies={}))


async def test_dispatch_from_the_tasks_view_and_the_run_page(api: Api) -> None:
    creds = api.node("c1")
    envelope_ok(await api.as_node(creds, "POST", "/heartbeat", json={}))
    client, tok, csrf = await login(api)
    task_id = await api.setup_task(tok, n_feeds=2)
    tasks = await client.get("/ui/tasks")
    assert f"/ui/tasks/{task_id}/dispatch" in tasks.text
    r = await client.post(f"/ui/tasks/{task_id}/dispatch", headers={"X-CSRF-Token": csrf})
    data = envelope_ok(r)
    assert data["allocations_created"] >= 1
    run_id = data["runs"][0]["schedule_run_id"]
    runs = await client.get("/ui/runs", params={"live": "1"})
    assert f"/ui/runs/{run_id}" in runs.text
    # a child takes the work and reports it: the run page shows the allocation and results
    pkg = envelope_ok(await api.as_node(creds, "POST", "/claim-task"))
    feed = pkg["feeds"][0]["id"]
    envelope_ok(await api.as_node(creds, "POST", "/report-completion", json={
        "allocation_id": pkg["allocation_id"], "task_id": task_id, "article_count": 0,
        "results": [{"feed_id": feed, "status": "failed", "error": "HTTP 502 from origin"}]}))
    page = await client.get(f"/ui/runs/{run_id}")
    assert page.status_code == 200
    assert 'class="alloc" data-status="completed"' in page.text
    assert "HTTP 502 from origin" in page.text and "c1" in page.text
    feeds = await client.get("/ui/feeds", params={"live": "1"})
    row = re.search(rf'id="feed-{feed}".*?</tr>', feeds.text, re.S).group(0)
    assert 'class="bad streak">1<' in row
    overview = await client.get("/ui/", params={"live": "1"})
    failed = re.search(r'id="card-failed-feeds".*?</div>', overview.text, re.S).group(0)
    assert '<span class="value bad">1</span>' in failed
    envelope_err(await client.get("/ui/runs/no-such-run"), 404)
    envelope_err(await client.post("/ui/tasks/no-such-task/dispatch",
                                    headers={"X-CSRF-Token": csrf}), 404)


def cleared(r: httpx.Response) -> bool:
    """The response deletes the session cookie."""
    cookie = r.headers.get("set-cookie", "")
    return cookie.startswith("cascade_ui=") and ("Max-Age=0" in cookie
                                                 or 'cascade_ui=""' in cookie)


async def fresh_client(api: Api) -> httpx.AsyncClient:
    """A client without a cookie jar of its own use (cookies go in explicit headers)."""
    return httpx.AsyncClient(transport=api.client._transport, base_url="http://parent")


async def test_the_session_cookie_is_not_the_token(api: Api) -> None:
    tok = api.token(ttl=30 * 86400)
    r = await api.client.post("/ui/login", data={"token": tok})
    assert r.status_code == 303
    assert "Max-Age=43200" in r.headers["set-cookie"]  # parent.ui_session_ttl, not 30 days
    value = api.client.cookies.get("cascade_ui")
    assert value and tok not in value and value.count(".") == 4
    jti = tokens.decode(ADMIN_SECRET, tok, api.clock.now())["jti"]
    # useless as a credential anywhere but the dashboard's cookie
    envelope_err(await api.admin("GET", "/nodes", value), 401, "invalid_token")
    async with await fresh_client(api) as other:
        envelope_err(await other.get("/ui/nodes", params={"live": "1"},
                                     headers={"Authorization": f"Bearer {value}"}), 401)
        # a forged one (a later expiry, the same signature) opens nothing
        v, _jti, exp, nonce, mac = value.split(".")
        forged = ".".join((v, jti, str(int(exp) + 86400), nonce, mac))
        r = await other.get("/ui/", headers={"Cookie": f"cascade_ui={forged}"})
        assert r.status_code == 303 and r.headers["location"] == "/ui/login" and cleared(r)
        # the token itself in the cookie (the old format) opens nothing either
        r = await other.get("/ui/", headers={"Cookie": f"cascade_ui={tok}"})
        assert r.status_code == 303 and cleared(r)
    # another parent process with the same database and secret accepts the session
    app2 = create_app(api.store, api.clock, api.settings, admin_secret=ADMIN_SECRET)
    transport = httpx.ASGITransport(app=app2, client=("10.0.0.9", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://parent2") as second:
        page = await second.get("/ui/nodes", headers={"Cookie": f"cascade_ui={value}"})
        assert page.status_code == 200 and CSRF_RE.search(page.text)
    # the session never outlives its token
    short = api.token(ttl=600)
    async with await fresh_client(api) as other:
        r = await other.post("/ui/login", data={"token": short})
        max_age = int(re.search(r"Max-Age=(\d+)", r.headers["set-cookie"]).group(1))
        assert 0 < max_age <= 600


async def test_an_expired_session_goes_to_login_clears_the_cookie_and_is_no_failure(
        api: Api) -> None:
    tok = api.token(ttl=7 * 86400)
    r = await api.client.post("/ui/login", data={"token": tok})
    assert r.status_code == 303
    value = api.client.cookies.get("cascade_ui")
    csrf = CSRF_RE.search((await api.client.get("/ui/")).text).group(1)
    api.clock.advance(api.settings.parent.ui_session_ttl + 1)
    envelope_ok(await api.admin("GET", "/nodes", tok))  # the token is still valid
    limit = api.settings.parent.auth.failed_attempts_limit
    async with await fresh_client(api) as other:
        stale = {"Cookie": f"cascade_ui={value}"}
        for _ in range(limit + 2):
            r = await other.get("/ui/", headers=stale)
            assert r.status_code == 303 and r.headers["location"] == "/ui/login"
            assert cleared(r)
        r = await other.get("/ui/nodes", params={"live": "1"}, headers=stale)
        envelope_err(r, 401, "session_expired")
        assert cleared(r)
        r = await other.post("/ui/nodes/c1/disable", headers={**stale, "X-CSRF-Token": csrf})
        envelope_err(r, 401, "session_expired")
        assert cleared(r)
        # none of that counted as a failed login: the operator logs in again at once
        r = await other.post("/ui/login", data={"token": tok})
        assert r.status_code == 303 and r.headers["location"] == "/ui/"


async def test_revoking_the_token_ends_the_session(api: Api) -> None:
    client, tok, csrf = await login(api)
    jti = tokens.decode(ADMIN_SECRET, tok, api.clock.now())["jti"]
    value = client.cookies.get("cascade_ui")
    with api.store.session() as s:
        tokens.revoke(s, api.clock.now(), jti)
    r = await client.get("/ui/")
    assert r.status_code == 303 and r.headers["location"] == "/ui/login"
    assert cleared(r)
    limit = api.settings.parent.auth.failed_attempts_limit
    async with await fresh_client(api) as other:
        stale = {"Cookie": f"cascade_ui={value}"}
        for _ in range(limit + 1):
            envelope_err(await other.get("/ui/", params={"live": "1"}, headers=stale), 401,
                         "token_revoked")
        # logging out with the revoked token's session still drops the cookie
        r = await other.post("/ui/logout", data={"csrf": csrf}, headers=stale)
        assert r.status_code == 303 and r.headers["location"] == "/ui/login" and cleared(r)
        # and the revoked session was no failed login: another admin logs in from here
        r = await other.post("/ui/login", data={"token": api.token()})
        assert r.status_code == 303


async def test_language_by_accept_language_and_switch(api: Api) -> None:
    client, _tok, _csrf = await login(api)
    zh = await client.get("/ui/", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"})
    assert "在线节点" in zh.text and 'lang="zh-CN"' in zh.text
    en = await client.get("/ui/", headers={"Accept-Language": "en-US,en;q=0.9,zh;q=0.5"})
    assert "Nodes online" in en.text
    r = await client.get("/ui/lang/zh", headers={"Referer": "http://parent/ui/feeds"})
    assert r.status_code == 303 and r.headers["location"] == "/ui/feeds"
    assert "cascade_lang=zh" in r.headers["set-cookie"]
    assert "<h1>订阅源</h1>" in (await client.get("/ui/feeds", headers={
        "Accept-Language": "en"})).text
    r = await client.get("/ui/lang/en", headers={"Referer": "http://evil.example/x"})
    assert r.headers["location"] == "/ui/"  # never an open redirect
    envelope_err(await client.get("/ui/lang/fr"), 422)


async def test_tasks_show_next_fire_times_in_the_configured_zone(tmp_path, store: Store,
                                                                  clock) -> None:
    settings = make_settings(tmp_path, parent={"scheduler": {"timezone": "Asia/Shanghai"}})
    app = create_app(store, clock, settings, admin_secret=ADMIN_SECRET)
    transport = httpx.ASGITransport(app=app, client=("10.0.0.2", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://parent") as client:
        api = Api(client, app, store, clock, settings)
        _c, tok, _csrf = await login(api)
        await api.setup_task(tok, n_feeds=1)  # cron "0 9 * * *"
        page = await client.get("/ui/tasks")
    fires = re.search(r'class="fires">(.*?)</td>', page.text, re.S).group(1)
    assert fires.count("09:00:00") == 3 and "Asia/Shanghai" in page.text


async def test_sub_path_behind_a_proxy(tmp_path, store: Store, clock) -> None:
    settings = make_settings(tmp_path, parent={"base_path": "/cascade/"})
    assert settings.parent.base_path == "/cascade"
    app = create_app(store, clock, settings, admin_secret=ADMIN_SECRET)
    transport = httpx.ASGITransport(app=app, client=("10.0.0.3", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://parent") as client:
        api = Api(client, app, store, clock, settings)
        r = await client.get("/")
        assert r.headers["location"] == "/cascade/ui/"
        assert (await client.get("/cascade/")).headers["location"] == "/cascade/ui/"
        # a proxy that passes the prefix on ...
        _c, tok, csrf = await login(api, prefix="/cascade")
        r = await client.post("/cascade/ui/login", data={"token": tok})
        assert "Path=/cascade/ui" in r.headers["set-cookie"]
        page = await client.get("/cascade/ui/nodes")
        assert 'href="/cascade/ui/static/app.css"' in page.text
        assert 'href="/cascade/ui/runs"' in page.text and 'href="/ui/' not in page.text
        assert 'data-live="/cascade/ui/nodes?live=1"' in page.text
        # ... and one that strips it: same page, links and the live address still under the
        # prefix (the browser only reaches the parent through it)
        # (a browser sends the /cascade/ui cookie; the proxy forwards it to /ui)
        cookie = {"cascade_ui": client.cookies.get("cascade_ui", path="/cascade/ui")}
        stripped = await client.get("/ui/nodes", cookies=cookie)
        assert 'href="/cascade/ui/runs"' in stripped.text
        assert 'data-live="/cascade/ui/nodes?live=1"' in stripped.text
        for prefix in ("", "/cascade"):  # the proxy strips the sub-path, or passes it on
            docs = await client.get(prefix + "/docs")
            assert "/cascade/openapi.json" in docs.text
            assert "/cascade/docs/assets/swagger-ui-bundle.js" in docs.text
            asset = await client.get(prefix + "/docs/assets/swagger-ui-bundle.js")
            assert asset.status_code == 200
            schema = (await client.get(prefix + "/openapi.json")).json()
            assert schema["servers"] == [{"url": "/cascade"}]
            assert "adminToken" in schema["components"]["securitySchemes"]
    with pytest.raises(Exception, match="base_path"):
        make_settings(tmp_path, parent={"base_path": "cascade ui"})


async def test_docs_are_served_without_a_cdn_and_declare_the_auth_schemes(api: Api) -> None:
    docs = await api.client.get("/docs")
    assert docs.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']?([^"' >]+)""", docs.text)
    assert urls and all(u.startswith("/docs/assets/") for u in urls), urls
    assert "cdn" not in docs.text.lower()
    for url in urls:
        r = await api.client.get(url)
        assert r.status_code == 200 and len(r.content) > 500, url
    envelope_err(await api.client.get("/docs/assets/..%2Fsecret"), 404)
    envelope_err(await api.client.get("/docs/assets/index.html"), 404)
    schema = (await api.client.get("/openapi.json")).json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["adminToken"] == {**schemes["adminToken"], "type": "http", "scheme": "bearer"}
    assert schemes["nodeKey"]["in"] == "header" and schemes["nodeKey"]["name"] == "Authorization"
    paths = schema["paths"]
    assert paths[f"{P}/nodes"]["get"]["security"] == [{"adminToken": []}]
    assert paths[f"{P}/claim-task"]["post"]["security"] == [{"nodeKey": []}]
    assert {"adminToken": []} in paths[f"{P}/feeds"]["get"]["security"]
    assert "security" not in paths["/healthz"]["get"]
    assert not any(p.startswith("/ui") for p in paths)


async def test_static_files_are_whitelisted(api: Api) -> None:
    js = await api.client.get("/ui/static/app.js")
    assert js.status_code == 200 and "X-CSRF-Token" in js.text
    assert js.headers["content-type"].startswith("text/javascript")
    for name in ("../routes.py", "..%2Froutes.py", "routes.py", "missing.js"):
        assert (await api.client.get(f"/ui/static/{name}")).status_code == 404, name


async def test_pages_forbid_framing_and_caching(api: Api) -> None:
    client, _tok, _csrf = await login(api)
    page = await client.get("/ui/")
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"


async def test_failed_logins_are_throttled_per_address(api: Api) -> None:
    limit = api.settings.parent.auth.failed_attempts_limit
    for _ in range(limit):
        r = await api.client.post("/ui/login", data={"token": "eyJ.bad.token"})
        assert r.status_code == 401
    r = await api.client.post("/ui/login", data={"token": api.token()})
    envelope_err(r, 429, "too_many_requests")
    assert int(r.headers["retry-after"]) >= 1


async def test_cross_site_posts_are_refused(api: Api) -> None:
    client, tok, csrf = await login(api)
    api.node("c1")
    cross = {"Sec-Fetch-Site": "cross-site"}
    r = await client.post("/ui/login", data={"token": tok}, headers=cross)
    envelope_err(r, 403, "csrf_failed")
    envelope_err(await client.post("/ui/nodes/c1/disable", headers={**cross,
                                                                    "X-CSRF-Token": csrf}),
                 403, "csrf_failed")
    envelope_ok(await client.post("/ui/nodes/c1/disable", headers={
        "Sec-Fetch-Site": "same-origin", "X-CSRF-Token": csrf}))
