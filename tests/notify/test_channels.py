"""Every channel shape, posted through a real local receiver acting as the HTTP proxy, so
the webhook keeps its real host name (channel detection) without leaving the machine."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from cascade_cli.domain.notify import Notifier, queue_run_notifications
from cascade_cli.store.models import Delivery
from tests.notify.conftest import add_run
from tests.notify.receivers import Receiver
from tests.schedule.helpers import add_feed, add_task

JSON_TEMPLATE = """{
  "event": "new_articles",
  "source": "{{ feed.mp_name }}",
  "titles": [{% for a in articles %}"{{ a.title }}"{{ "," if not loop.last }}{% endfor %}],
  "count": {{ article_count }},
  "task": {{ task.name | tojson }}
}"""


def _answer(req):
    if req.host in ("qyapi.weixin.qq.com", "oapi.dingtalk.com"):
        return 200, {"Content-Type": "application/json"}, b'{"errcode":0,"errmsg":"ok"}'
    if req.host.startswith("open."):
        return 200, {"Content-Type": "application/json"}, b'{"code":0,"msg":"success"}'
    if req.host.endswith("day.app"):
        return 200, {"Content-Type": "application/json"}, b'{"code":200,"message":"success"}'
    return 204, {}, b""


@pytest.fixture
def proxy():
    rec = Receiver(_answer).start()
    yield rec
    rec.stop()


CASES = [
    ("http://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=K", 0, "wecom"),
    ("http://oapi.dingtalk.com/robot/send?access_token=T", 0, "dingtalk"),
    ("http://open.feishu.cn/open-apis/bot/v2/hook/H", 0, "feishu"),
    ("http://open.larksuite.com/open-apis/bot/v2/hook/H", 0, "feishu"),
    ("http://api.day.app/DEVICEKEY/", 0, "bark"),
    ("http://hooks.example.org/notify", 0, "generic"),
    ("http://hooks.example.org/json", 1, "json"),
]


@pytest.mark.parametrize("url,message_type,channel", CASES, ids=[c[2] + str(c[1]) for c in CASES])
def test_channel_shapes(store, clock, fast_settings, proxy, url, message_type, channel):
    add_feed(store, clock.now(), "MP_WXS_9", mp_name="Tech Daily")
    tid = add_task(store, clock.now(), name="morning", feeds=["MP_WXS_9"], web_hook_url=url,
                   message_type=message_type,
                   message_template=JSON_TEMPLATE if message_type == 1 else None)
    run_id = add_run(store, clock.now(), tid, {"MP_WXS_9": 2})
    with store.session() as s:
        assert queue_run_notifications(s, clock.now(), run_id, fast_settings) == 1
    with Notifier(store, clock, fast_settings,
                  transport=httpx.HTTPTransport(proxy=proxy.url)) as n:
        assert n.deliver_due() == 1
    with store.session() as s:
        d = s.scalar(select(Delivery))
    assert d.status == "delivered", d.last_error
    assert d.channel == channel
    [req] = proxy.requests
    assert req.host == httpx.URL(url).host
    body = req.json()
    if channel == "wecom":
        assert body["msgtype"] == "markdown"
        assert "Tech Daily" in body["markdown"]["content"]
        assert "[MP_WXS_9 article 0](https://example.org/MP_WXS_9/0)" in \
            body["markdown"]["content"]
    elif channel == "dingtalk":
        assert body["msgtype"] == "markdown"
        assert body["markdown"]["title"] == "Tech Daily: 2 new"
        assert "MP_WXS_9 article 1" in body["markdown"]["text"]
    elif channel == "feishu":
        assert body["msg_type"] == "text" and "Tech Daily" in body["content"]["text"]
    elif channel == "bark":
        assert body["title"] == "Tech Daily: 2 new" and "article 0" in body["body"]
    elif channel == "generic":
        assert set(body) >= {"title", "text", "feed", "articles"}
        assert body["feed"]["id"] == "MP_WXS_9" and len(body["articles"]) == 2
        assert "webhook" not in str(body["task"]).lower()
    else:
        assert body == {"event": "new_articles", "source": "Tech Daily",
                        "titles": ["MP_WXS_9 article 0", "MP_WXS_9 article 1"], "count": 2,
                        "task": "morning"}


def test_wecom_long_message_is_cut_to_the_channel_limit(store, clock, fast_settings, proxy):
    add_feed(store, clock.now(), "F1")
    tid = add_task(store, clock.now(), feeds=["F1"],
                   web_hook_url="http://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=K",
                   message_template="{% for i in range(3000) %}长文{% endfor %}")
    run_id = add_run(store, clock.now(), tid, {"F1": 1})
    with store.session() as s:
        queue_run_notifications(s, clock.now(), run_id, fast_settings)
    with Notifier(store, clock, fast_settings,
                  transport=httpx.HTTPTransport(proxy=proxy.url)) as n:
        n.deliver_due()
    content = proxy.requests[0].json()["markdown"]["content"]
    assert len(content.encode()) <= 4096 and content.endswith("...")
