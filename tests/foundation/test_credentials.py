"""Credentials: generation, one-way storage, verification, rotation overlap, revocation and
signed requests (auth + store/nodes)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, text

from cascade_cli import auth
from cascade_cli.clock import FakeClock
from cascade_cli.errors import Conflict, InvalidInput, NotFound
from cascade_cli.store import nodes
from cascade_cli.store.engine import Store
from cascade_cli.store.models import Allocation, MessageTask, Node, ScheduleRun

# --- generation and hashing --------------------------------------------------------------


def test_generated_credentials_have_the_documented_shape() -> None:
    seen = set()
    for _ in range(50):
        c = auth.generate_credentials()
        assert auth.API_KEY_RE.match(c.api_key) and len(c.api_key) == 34
        assert auth.API_SECRET_RE.match(c.api_secret) and c.api_secret.startswith("CS")
        assert len(c.api_secret) == 45  # CS + 43 base64url chars (32 random bytes)
        seen.add(c.api_secret)
    assert len(seen) == 50
    assert "CS" not in repr(c).split("api_secret=")[1]


def test_hash_is_one_way_and_verification_exact() -> None:
    secret = auth.generate_api_secret()
    h = auth.hash_secret(secret)
    assert secret not in h and h.startswith("hmac-sha256$")
    assert auth.verify_secret(secret, h)
    assert not auth.verify_secret(secret + "x", h)
    assert not auth.verify_secret(secret[:-1], h)
    assert not auth.verify_secret(secret, None)
    assert not auth.verify_secret(secret, "")


def test_stored_hash_format_is_stable() -> None:
    """Hashes already stored in databases must keep verifying: HMAC-SHA256 with the
    pepper, hex, behind the ``hmac-sha256$`` tag."""
    import hashlib
    import hmac

    expected = hmac.new(auth._HASH_PEPPER, b"CS-known", hashlib.sha256).hexdigest()
    assert auth.hash_secret("CS-known") == f"hmac-sha256${expected}"


def test_mask_secret() -> None:
    assert auth.mask_secret("CSabcdefghijk") == "CSab…"
    assert auth.mask_secret(None) == ""
    assert auth.mask_secret("short") == "***"


# --- signed requests ---------------------------------------------------------------------


def test_signed_request_round_trip_and_tampering() -> None:
    c = auth.generate_credentials()
    pub = auth.public_key_for(c.api_secret)
    body = b'{"running": []}'
    header = auth.sign_request(c.api_key, c.api_secret, "post", "/api/v1/cascade/heartbeat?x=1",
                               body, 1_700_000_000, nonce="ab" * 16)
    parsed = auth.parse_authorization(header)
    assert isinstance(parsed, auth.SignedAuth)
    assert parsed.api_key == c.api_key and parsed.timestamp == "1700000000"
    assert c.api_secret not in header  # the secret never crosses the wire

    def ok(method: str = "POST", path: str = "/api/v1/cascade/heartbeat?x=1",
           ts: str = parsed.timestamp, nonce: str = parsed.nonce, data: bytes = body,
           key: str = pub, sig: str = parsed.signature) -> bool:
        return auth.verify_signature(key, method, path, ts, nonce, data, sig)

    assert ok()
    assert not ok(method="PUT")
    assert not ok(path="/api/v1/cascade/heartbeat?x=2")
    assert not ok(ts="1700000001")
    assert not ok(nonce="cd" * 16)
    assert not ok(data=b'{"running": ["x"]}')
    assert not ok(key=auth.public_key_for(auth.generate_api_secret()))
    assert not ok(sig="A" * 86)
    assert not ok(sig="not-base64!")
    assert not ok(key="short")
    assert not auth.verify_signature(None, "POST", "/", "1", "n", b"", parsed.signature)


def test_parse_authorization_forms() -> None:
    key, secret = "CN" + "a" * 32, "CS" + "b" * 43
    plain = auth.parse_authorization(f"AK-SK {key}:{secret}")
    assert plain == auth.PlainAuth(key, secret)
    assert auth.parse_authorization(f"ak-sk  {key}:{secret} ") == plain
    assert auth.parse_authorization("Bearer tok.en.x") == auth.BearerAuth("tok.en.x")
    for bad in (None, "", "AK-SK nocolon", "AK-SK :x", "Basic abc", "Bearer",
                "Cascade-Ed25519 key=a,ts=1", "Cascade-Ed25519 key=a,ts=1,nonce=n,sig=s,x=1",
                "Cascade-Ed25519 key=a b,ts=1,nonce=n,sig=s", "AK-SK " + "x" * 3000):
        assert auth.parse_authorization(bad) is None, bad


# --- nodes in the store ------------------------------------------------------------------


def test_create_node_stores_key_hash_and_public_key_never_the_secret(store: Store,
                                                                      clock: FakeClock) -> None:
    with store.session() as s:
        node, creds = nodes.create_node(s, clock.now(), "child-1", description="d",
                                        max_capacity=4)
    with store.session() as s:
        row = s.get(Node, node.id)
        assert row is not None
        assert row.api_key == creds.api_key and row.max_capacity == 4
        assert row.secret_hash == auth.hash_secret(creds.api_secret)
        assert row.public_key == auth.public_key_for(creds.api_secret)
        assert nodes.secret_matches(row, creds.api_secret, clock.now())
        assert not nodes.secret_matches(row, "CS" + "x" * 43, clock.now())
        assert nodes.find_by_key(s, creds.api_key) is row
        assert nodes.find_by_key(s, "CN" + "0" * 32) is None
        assert nodes.find_by_key(s, "garbage") is None
    # the secret is nowhere in the database file, in any table
    with store.engine.connect() as conn:
        for table in ("nodes", "events", "auth_nonces"):
            for r in conn.execute(text(f"SELECT * FROM {table}")):  # noqa: S608
                assert creds.api_secret not in " ".join(str(v) for v in r)


def test_node_names_are_unique_and_validated(store: Store, clock: FakeClock) -> None:
    with store.session() as s:
        nodes.create_node(s, clock.now(), "dup")
    with pytest.raises(Conflict, match="already exists"), store.session() as s:
        nodes.create_node(s, clock.now(), "dup")
    for bad in ("", "-x", "a b", "x" * 101, "名字", "a/b"):
        with pytest.raises(InvalidInput), store.session() as s:
            nodes.create_node(s, clock.now(), bad)
    for cap in (0, 257):
        with pytest.raises(InvalidInput, match="capacity"), store.session() as s:
            nodes.create_node(s, clock.now(), "capx", max_capacity=cap)
    with store.session() as s:
        assert [n.name for n in nodes.list_nodes(s)] == ["dup"]
        with pytest.raises(NotFound, match="node not found: nobody"):
            nodes.get_node(s, "nobody")


def test_rotation_keeps_the_old_secret_for_the_overlap_only(store: Store,
                                                             clock: FakeClock) -> None:
    with store.session() as s:
        node, old = nodes.create_node(s, clock.now(), "rot")
        old_pub = node.public_key
    clock.advance(10)
    with store.session() as s:
        node, new = nodes.rotate_credentials(s, clock.now(), "rot", overlap_seconds=3600)
        assert new.api_key == old.api_key and new.api_secret != old.api_secret
        assert node.prev_valid_until == clock.now() + timedelta(seconds=3600)
    with store.session() as s:
        n = nodes.get_node(s, "rot")
        assert nodes.secret_matches(n, new.api_secret, clock.now())
        assert nodes.secret_matches(n, old.api_secret, clock.now())
        assert nodes.public_keys(n, clock.now()) == [auth.public_key_for(new.api_secret), old_pub]
        clock.advance(3599)
        assert nodes.secret_matches(n, old.api_secret, clock.now())
        clock.advance(1)  # the window is closed at its end
        assert not nodes.secret_matches(n, old.api_secret, clock.now())
        assert nodes.secret_matches(n, new.api_secret, clock.now())
        assert nodes.public_keys(n, clock.now()) == [auth.public_key_for(new.api_secret)]


def test_rotation_without_overlap_drops_the_old_secret_at_once(store: Store,
                                                                clock: FakeClock) -> None:
    with store.session() as s:
        _, old = nodes.create_node(s, clock.now(), "rot0")
        n, new = nodes.rotate_credentials(s, clock.now(), "rot0", overlap_seconds=0)
        assert not nodes.secret_matches(n, old.api_secret, clock.now())
        assert nodes.secret_matches(n, new.api_secret, clock.now())
        assert n.prev_secret_hash is None and n.prev_valid_until is None


def test_signed_request_verifies_with_stored_public_keys_across_rotation(
        store: Store, clock: FakeClock) -> None:
    with store.session() as s:
        _, old = nodes.create_node(s, clock.now(), "sig")
        n, new = nodes.rotate_credentials(s, clock.now(), "sig", overlap_seconds=60)
        for secret in (old.api_secret, new.api_secret):
            header = auth.sign_request(n.api_key, secret, "GET", "/x", b"", 1)
            p = auth.parse_authorization(header)
            assert isinstance(p, auth.SignedAuth)
            assert any(auth.verify_signature(k, "GET", "/x", p.timestamp, p.nonce, b"",
                                             p.signature)
                       for k in nodes.public_keys(n, clock.now()))
        clock.advance(61)
        header = auth.sign_request(n.api_key, old.api_secret, "GET", "/x", b"", 1)
        p = auth.parse_authorization(header)
        assert isinstance(p, auth.SignedAuth)
        assert not any(auth.verify_signature(k, "GET", "/x", p.timestamp, p.nonce, b"",
                                             p.signature)
                       for k in nodes.public_keys(n, clock.now()))


def test_revocation_is_immediate_for_current_and_overlapping_secrets(
        store: Store, clock: FakeClock) -> None:
    with store.session() as s:
        _, old = nodes.create_node(s, clock.now(), "rev")
        _, new = nodes.rotate_credentials(s, clock.now(), "rev", overlap_seconds=3600)
        n = nodes.revoke_credentials(s, clock.now(), "rev")
        assert not nodes.secret_matches(n, old.api_secret, clock.now())
        assert not nodes.secret_matches(n, new.api_secret, clock.now())
        assert nodes.public_keys(n, clock.now()) == []
        assert nodes.node_status(n, clock.now(), 180) == "revoked"
        # rotating again reissues working credentials for the same key
        n, again = nodes.rotate_credentials(s, clock.now(), "rev", overlap_seconds=3600)
        assert nodes.secret_matches(n, again.api_secret, clock.now())
        assert not nodes.secret_matches(n, new.api_secret, clock.now())
        assert n.revoked_at is None


def test_status_derives_from_heartbeat_age_and_flags(store: Store, clock: FakeClock) -> None:
    with store.session() as s:
        n, _ = nodes.create_node(s, clock.now(), "st")
        assert nodes.node_status(n, clock.now(), 180) == "never seen"
        n.last_heartbeat_at = clock.now()
        clock.advance(180)
        assert nodes.node_status(n, clock.now(), 180) == "online"
        assert nodes.is_online(n, clock.now(), 180)
        clock.advance(1)
        assert nodes.node_status(n, clock.now(), 180) == "offline"
        nodes.set_enabled(s, clock.now(), "st", False)
        assert nodes.node_status(n, clock.now(), 180) == "disabled"
        nodes.set_enabled(s, clock.now(), n.id, True)  # by id too
        assert nodes.node_status(n, clock.now(), 1000) == "online"


def test_node_dict_has_no_secret_or_hash(store: Store, clock: FakeClock) -> None:
    with store.session() as s:
        n, creds = nodes.create_node(s, clock.now(), "view")
        nodes.rotate_credentials(s, clock.now(), "view", overlap_seconds=60)
        d = nodes.node_dict(n, clock.now(), 180)
    flat = repr(d)
    assert creds.api_secret not in flat
    assert "hmac-sha256" not in flat and (n.public_key or "x") not in flat
    assert not {"secret_hash", "api_secret", "public_key", "prev_secret_hash"} & set(d)
    assert d["previous_secret_valid_until"].endswith("Z")


def test_nonces_are_single_use_on_every_database(any_store: Store, clock: FakeClock) -> None:
    with any_store.session() as s:
        n, _ = nodes.create_node(s, clock.now(), "nonce")
        node_id = n.id
    later = clock.now() + timedelta(seconds=900)
    with any_store.session() as s:
        assert nodes.remember_nonce(s, node_id, "n1", later) is True
        assert nodes.remember_nonce(s, node_id, "n1", later) is False  # replay, same unit
        assert nodes.remember_nonce(s, node_id, "n2", clock.now()) is True
    with any_store.session() as s:
        assert nodes.remember_nonce(s, node_id, "n1", later) is False  # replay, later unit
    clock.advance(1)
    with any_store.session() as s:
        assert nodes.purge_nonces(s, clock.now()) == 1  # n2 expired, n1 kept
    with any_store.session() as s:
        assert nodes.remember_nonce(s, node_id, "n2", later) is True


def test_delete_node_refuses_while_it_holds_work(store: Store, clock: FakeClock) -> None:
    now = clock.now()
    with store.session() as s:
        n, _ = nodes.create_node(s, now, "busy")
        task = MessageTask(name="t", created_at=now, updated_at=now)
        s.add(task)
        s.flush()
        run = ScheduleRun(task_id=task.id, scheduled_for=now, created_at=now)
        s.add(run)
        s.flush()
        s.add(Allocation(schedule_run_id=run.id, task_id=task.id, node_id=n.id,
                         status="executing", dispatched_at=now, created_at=now, updated_at=now))
        s.add(Allocation(schedule_run_id=run.id, task_id=task.id, target_node_id=n.id,
                         status="pending", dispatched_at=now, created_at=now, updated_at=now))
    with pytest.raises(Conflict, match="still holds allocations"), store.session() as s:
        nodes.delete_node(s, "busy")
    with store.session() as s:
        s.execute(Allocation.__table__.update().where(Allocation.status == "executing")
                  .values(status="completed"))
    with store.session() as s:
        nodes.delete_node(s, "busy")
    with store.session() as s:
        assert nodes.list_nodes(s) == []
        pending = s.scalar(select(Allocation).where(Allocation.status == "pending"))
        assert pending is not None and pending.target_node_id is None  # back to the pool
