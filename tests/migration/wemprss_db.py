"""A we-mp-rss database for the importer tests: the original's three tables, written from
its model definitions (core/models/cascade_node.py, feed.py, message_task.py)."""

from __future__ import annotations

import hashlib
import json

from sqlalchemy import create_engine, text

from cascade_cli.store.engine import normalise_db_url


def ddl(dialect: str) -> list[str]:
    dt = "TIMESTAMP" if dialect == "postgresql" else "DATETIME"
    return [
        f"""CREATE TABLE we_cascade_nodes (
            id VARCHAR(255) NOT NULL PRIMARY KEY,
            node_type INTEGER NOT NULL,
            name VARCHAR(255) NOT NULL,
            description TEXT,
            api_url VARCHAR(500),
            callback_url VARCHAR(500),
            api_key VARCHAR(100),
            api_secret_hash VARCHAR(64),
            parent_id VARCHAR(255),
            status INTEGER,
            sync_config TEXT,
            last_sync_at {dt},
            last_heartbeat_at {dt},
            is_active BOOLEAN,
            created_at {dt},
            updated_at {dt})""",
        f"""CREATE TABLE we_feeds (
            id VARCHAR(255) NOT NULL PRIMARY KEY,
            mp_name VARCHAR(255),
            mp_cover VARCHAR(255),
            mp_intro VARCHAR(255),
            status INTEGER,
            sync_time INTEGER,
            update_time INTEGER,
            created_at {dt},
            updated_at {dt},
            faker_id VARCHAR(255))""",
        f"""CREATE TABLE we_message_tasks (
            id VARCHAR(255) NOT NULL PRIMARY KEY,
            message_type INTEGER NOT NULL,
            name VARCHAR(100) NOT NULL,
            message_template TEXT NOT NULL,
            web_hook_url VARCHAR(500) NOT NULL,
            headers TEXT,
            cookies TEXT,
            mps_id TEXT NOT NULL,
            cron_exp VARCHAR(100),
            status INTEGER,
            created_at {dt},
            updated_at {dt})""",
    ]


# Shaped as the original generates them: "CN"/"CS" + 32 base64url characters.
CHILD_KEY = "CNk-3_Zp" + "A" * 26
CHILD_SECRET = "CSq_9-Lm" + "B" * 26
OFF_KEY = "CN__--" + "c" * 28
OFF_SECRET = "CS" + "d" * 32
# we-mp-rss's default text template (jobs/webhook.py), as an operator would have kept it.
ORIGINAL_TEMPLATE = """### {{feed.mp_name}} 订阅消息：
{% if articles %}
{% for article in articles %}
- [**{{ article.title }}**]({{article.url}}) ({{ article.publish_time }})
{% endfor %}
{% else %}
- 暂无文章
{% endif %}
"""
FEEDS = [("MP_WXS_3941", "科技日报", "MzA1"), ("MP_WXS_2200", "人民日报", "MzA2"),
         ("MP_WXS_7788", "每日英语", "MzA3")]


def build(url: str) -> None:
    engine = create_engine(normalise_db_url(url))
    sha = lambda s: hashlib.sha256(s.encode()).hexdigest()  # noqa: E731
    with engine.begin() as conn:
        for stmt in ddl(engine.dialect.name):
            conn.execute(text(stmt))
        nodes = [
            {"id": "p-0", "node_type": 0, "name": "主节点", "api_key": None, "hash": None,
             "active": True, "cb": None},
            {"id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "node_type": 1,
             "name": "上海子节点", "api_key": CHILD_KEY, "hash": sha(CHILD_SECRET),
             "active": True, "cb": "http://10.0.0.5:8002/api/v1/wx/cascade/notify"},
            {"id": "9a1b2c3d-0000-4000-8000-000000000001", "node_type": 1,
             "name": "backup node", "api_key": OFF_KEY, "hash": sha(OFF_SECRET),
             "active": False, "cb": None},
            {"id": "no-creds-1", "node_type": 1, "name": "never used", "api_key": None,
             "hash": None, "active": True, "cb": None},
        ]
        for n in nodes:
            conn.execute(text(
                "INSERT INTO we_cascade_nodes (id, node_type, name, description, api_url, "
                "callback_url, api_key, api_secret_hash, status, sync_config, is_active) "
                "VALUES (:id, :t, :name, '', 'http://10.0.0.5:8002', :cb, :k, :h, 1, '{}', :a)"),
                {"id": n["id"], "t": n["node_type"], "name": n["name"], "cb": n["cb"],
                 "k": n["api_key"], "h": n["hash"], "a": n["active"]})
        for fid, name, fake in FEEDS:
            conn.execute(text(
                "INSERT INTO we_feeds (id, mp_name, mp_cover, mp_intro, status, sync_time, "
                "update_time, faker_id) VALUES (:id, :n, 'http://img/c.jpg', '简介', 1, 0, "
                "1764000000, :f)"), {"id": fid, "n": name, "f": fake})
        tasks = [
            {"id": "task-1", "type": 0, "name": "早报推送", "tpl": "### {{feed.mp_name}}",
             "hook": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=abc",
             "headers": json.dumps({"X-Token": "t0k"}), "cookies": "sid=1; lang=zh",
             "mps": json.dumps([{"id": f, "mp_name": n} for f, n, _ in FEEDS[:2]]
                               + [{"id": "MP_WXS_GONE", "mp_name": "已删除"}],
                               ensure_ascii=False),
             "cron": "0 8 * * *", "status": 1},
            {"id": "task-4", "type": 0, "name": "原版模板", "tpl": ORIGINAL_TEMPLATE,
             "hook": "https://oapi.dingtalk.com/robot/send?access_token=x", "headers": None,
             "cookies": None, "mps": json.dumps([{"id": FEEDS[0][0]}]), "cron": "*/30 * * * *",
             "status": 1},
            {"id": "task-5", "type": 0, "name": "坏模板", "tpl": "{% for a in articles %}",
             "hook": "https://open.feishu.cn/x", "headers": None, "cookies": None,
             "mps": json.dumps([{"id": FEEDS[1][0]}]), "cron": "0 7 * * *", "status": 1},
            {"id": "task-2", "type": 1, "name": "周报", "tpl": "", "hook": "",
             "headers": None, "cookies": None,
             "mps": json.dumps([{"id": FEEDS[2][0]}]), "cron": "0 9 * * 1", "status": 0},
            {"id": "task-3", "type": 0, "name": "坏的", "tpl": "", "hook": "",
             "headers": None, "cookies": None, "mps": "[]", "cron": "every day", "status": 1},
        ]
        for t in tasks:
            conn.execute(text(
                "INSERT INTO we_message_tasks (id, message_type, name, message_template, "
                "web_hook_url, headers, cookies, mps_id, cron_exp, status) VALUES (:id, :type, "
                ":name, :tpl, :hook, :headers, :cookies, :mps, :cron, :status)"), t)
    engine.dispose()
