"""Typed node answers (``protocol``'s answer models) are the protocol's JSON byte for byte.

The node routes used to answer with dicts written by ``envelope.ok``; they now answer with
models serialised by pydantic. The protocol is public, so the bytes must not change: every
answer is compared with what ``ok`` writes for the same dict, over awkward strings too
(non-ASCII, quotes, backslashes, control characters, lone ``\\u2028``) and awkward numbers.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cascade_cli import PROTOCOL_VERSION
from cascade_cli.protocol import (
    AllocationAnswer,
    HeartbeatAnswer,
    HeartbeatCheck,
    LegacyTaskPackage,
    PackageFeed,
    ReportResultAnswer,
    TaskPackage,
    UploadAnswer,
    WireAnswer,
)
from cascade_cli.web.envelope import ok
from cascade_cli.web.routes_node import answer

ODD = "公众号 \"q\" \\ \n\t\x00\x1f\x7f \u2028 😀 </script>"


def feed(i: int, text: str = ODD) -> dict[str, Any]:
    return {"id": f"MP_WXS_{i}", "faker_id": None, "mp_name": text, "mp_cover": None,
            "mp_intro": text, "status": 1, "url": f"https://example.com/{i}.xml",
            "kind": "rss", "etag": "W/\"1\"", "last_modified": None}


def package(text: str = ODD, **extra: Any) -> dict[str, Any]:
    return {"allocation_id": "a" * 32, "task_id": "t1", "task_name": text,
            "schedule_run_id": None, "attempt": 1, "epoch": 3,
            "lease": {"expires_at": "2026-11-27T09:00:00Z", "ttl": 300},
            "message_type": 0, "cron_exp": "0 9 * * *", "feeds": [feed(1, text), feed(2)],
            "dispatched_at": "2026-11-27T08:59:00Z", "protocol": PROTOCOL_VERSION, **extra}


LEGACY = {"message_template": ODD, "web_hook_url": "https://hook.example/x",
          "headers": '{"X-Token": "abc"}', "cookies": None}

ANSWERS: list[tuple[type[WireAnswer], dict[str, Any]]] = [
    (HeartbeatCheck, {"status": "alive", "node_id": "n1", "node_name": "c1", "role": "node",
                      "server_time": "2026-11-27T09:00:00Z", "protocol": PROTOCOL_VERSION}),
    (HeartbeatCheck, {"status": "alive", "node_id": None, "node_name": None, "role": "admin",
                      "server_time": "2026-11-27T09:00:00Z", "protocol": PROTOCOL_VERSION}),
    (HeartbeatAnswer, {"status": "alive", "node_id": "n1", "node_name": "c1",
                       "server_time": "2026-11-27T09:00:00Z", "heartbeat_interval": 100 / 3,
                       "lease_ttl": 300.0, "cancel": ["a1", "a2"],
                       "protocol": PROTOCOL_VERSION}),
    (HeartbeatAnswer, {"status": "alive", "node_id": "n1", "node_name": "c1",
                       "server_time": "2026-11-27T09:00:00Z", "heartbeat_interval": 1.0,
                       "lease_ttl": 0.5, "cancel": [], "protocol": PROTOCOL_VERSION}),
    (TaskPackage, package()),
    (TaskPackage, package("")),
    (LegacyTaskPackage, package(**LEGACY)),
    (LegacyTaskPackage, package(**dict.fromkeys(LEGACY))),
    (AllocationAnswer, {"allocation_id": "a1", "status": "completed"}),
    (UploadAnswer, {"received": 500, "new_count": 0}),
    (ReportResultAnswer, {"task_id": None, "recorded": True, "event_id": 2**40}),
]


@pytest.mark.parametrize(("model", "data"), ANSWERS)
def test_answer_bytes_equal_the_dict_envelope(model: type[WireAnswer],
                                              data: dict[str, Any]) -> None:
    typed = model.model_validate(data)
    assert answer(typed).body == ok(data).body
    # and the client reads back what was sent
    assert model.model_validate_json(typed.wire_json()).model_dump() == data


def test_a_list_of_packages_is_the_dict_list() -> None:
    dicts = [package(), package("x")]
    assert answer([TaskPackage.model_validate(d) for d in dicts]).body == ok(dicts).body


def test_legacy_fields_only_in_the_legacy_package() -> None:
    body = answer(TaskPackage.model_validate(package(**LEGACY))).body
    assert b"web_hook_url" not in body and b"message_template" not in body
    assert b'"cookies":null' in answer(LegacyTaskPackage.model_validate(package())).body


def test_answers_parse_partial_and_unknown_fields() -> None:
    """An older or newer parent: missing fields take defaults, unknown ones are ignored."""
    pkg = TaskPackage.model_validate({"allocation_id": "a1", "feeds": [{"id": "F"}],
                                      "new_field": {"x": 1}})
    assert pkg.allocation_id == "a1" and pkg.epoch is None and pkg.feeds == [PackageFeed(id="F")]
    assert HeartbeatAnswer.model_validate({}).cancel == []


@settings(max_examples=200, deadline=None)
@given(text=st.text(), ttl=st.integers(0, 2**31 - 1),
       interval=st.floats(min_value=0.001, max_value=1e9, allow_nan=False))
def test_any_text_and_numbers_serialise_like_the_envelope(text: str, ttl: int,
                                                         interval: float) -> None:
    data = package(text)
    data["lease"]["ttl"] = ttl
    try:
        expected = ok(data).body
    except UnicodeEncodeError:  # a lone surrogate: not sendable either way
        return
    assert answer(TaskPackage.model_validate(data)).body == expected
    hb = {"status": "alive", "node_id": text, "node_name": text, "server_time": None,
          "heartbeat_interval": interval, "lease_ttl": interval, "cancel": [text],
          "protocol": PROTOCOL_VERSION}
    assert answer(HeartbeatAnswer.model_validate(hb)).body == ok(hb).body


def test_the_stores_answers_keep_every_field(any_store: Any, clock: Any, settings: Any) -> None:
    """What the store builds today (packages for a plain and a legacy node, with the feeds the
    claim returns on PostgreSQL; the heartbeat) goes through the models unchanged, on every
    database: a field the store adds without a model field would be lost here."""
    from cascade_cli.domain.dispatch import dispatch
    from cascade_cli.protocol import HeartbeatIn
    from cascade_cli.store import allocations as alloc_repo
    from cascade_cli.store import nodes as node_repo
    from tests.core.helpers import make_feeds, make_node, make_task

    now = clock.now()
    plain = make_node(any_store, now, "child-a", capacity=4)
    legacy = make_node(any_store, now, "legacy-b", capacity=4)
    with any_store.session() as s:
        node_repo.set_legacy(s, now, legacy.id, True)
    feeds = make_feeds(any_store, now, 4)
    task = make_task(any_store, now, feeds, cron_exp="0 9 * * *",
                     web_hook_url="https://hook.example/x", headers={"X-Token": "令牌"},
                     cookies="a=1; b=2")
    with any_store.session() as s:
        dispatch(s, now, settings, task_id=task)
    seen: set[type[TaskPackage]] = set()
    for node, model in ((plain, TaskPackage), (legacy, LegacyTaskPackage)):
        with any_store.session() as s:
            row = node_repo.get_node(s, node.id)
            for alloc in alloc_repo.claim(s, now, row, settings, max_count=1):
                pkg = alloc_repo.package(s, alloc, now, legacy=bool(row.legacy))
                assert answer(model.model_validate(pkg)).body == ok(pkg).body
                assert ("web_hook_url" in pkg) is (model is LegacyTaskPackage)
                seen.add(model)
            hb = alloc_repo.heartbeat(s, now, row, HeartbeatIn(running=["gone"]), settings)
            assert answer(HeartbeatAnswer.model_validate(hb)).body == ok(hb).body
    assert seen == {TaskPackage, LegacyTaskPackage}
