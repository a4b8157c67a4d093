"""A re-implementation, from its observed behaviour, of the we-mp-rss child (its cascade
client, its task worker "path A" and its sync service "path B"), to drive Cascade's parent
exactly as a deployed, unmodified child does. No code of the original is copied.

What it reproduces, request by request (yishensanying/we-mp-rss, core/cascade.py,
jobs/cascade_task_dispatcher.py, jobs/cascade_sync.py):
- every request: ``Authorization: AK-SK <key>:<secret>`` and ``Content-Type:
  application/json``, on ``/api/v1/wx/cascade/...``; bodies sent with ``json=``; GET with
  query parameters; ``raise_for_status()``, the envelope's ``code`` is never looked at;
- heartbeat: ``POST /heartbeat`` without a body, or ``{"callback_url"}`` when configured;
- sync: ``GET /feeds``, upsert locally; ``GET /message-tasks`` (``mps_id`` a JSON string);
- path A: ``POST /claim-task`` (no body) -> ``PUT /task-status executing`` -> create the
  package's feeds locally (``mp_name``, ``mp_cover``, ``mp_intro``, ``status`` are required
  keys) -> build a task from ``message_template``/``web_hook_url`` (required keys) -> crawl
  -> ``POST /upload-articles`` with the WeChat-shaped articles new to the child ->
  ``POST /report-completion`` (results ``{mp_id, mp_name, status, article_count}``); any
  exception: ``PUT /task-status failed``;
- path B (``claim_and_execute_task``): claim -> ``PUT /task-status executing`` -> per feed
  found locally, run the job (crawl and send the webhook itself) -> ``POST
  /report-completion`` with ``{feed_id, mp_name, success, article_count: 0,
  new_article_count: 0, error}``; nothing uploaded;
- ``POST /report-result`` ``{task_id, results, timestamp}``.

Unlike the original, every HTTP answer is kept in ``responses`` so that a test can assert
that none failed (the original prints and swallows them).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

API = "/api/v1/wx/cascade"


def wechat_articles(feed_id: str, fakeid: str, n: int = 3) -> list[dict[str, Any]]:
    """What the WeChat crawler hands to its callback for one account: raw message ids,
    ``link``, ``cover``, ``digest``, ``update_time`` epoch seconds."""
    return [{"id": f"{fakeid}{1000 + i}", "mp_id": feed_id, "title": f"{feed_id} 文章 {i}",
             "link": f"https://mp.weixin.qq.com/s/{fakeid}_{i}",
             "cover": f"https://mmbiz.qpic.cn/{fakeid}/{i}.jpg",
             "content": f"<p>正文 {i}</p>", "update_time": 1764000000 + i,
             "digest": f"摘要 {i}"} for i in range(n)]


@dataclass
class LegacyChild:
    client: httpx.AsyncClient
    api_key: str
    api_secret: str
    crawl: Callable[[str, str], list[dict[str, Any]]] = wechat_articles
    callback_url: str = ""
    # the child's own database, as far as the cascade touches it
    local_feeds: dict[str, dict[str, Any]] = field(default_factory=dict)
    local_articles: dict[str, dict[str, Any]] = field(default_factory=dict)
    local_tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    webhooks_sent: list[dict[str, Any]] = field(default_factory=list)
    uploaded: list[dict[str, Any]] = field(default_factory=list)
    responses: list[httpx.Response] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    # --- CascadeClient --------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"AK-SK {self.api_key}:{self.api_secret}",
                "Content-Type": "application/json"}

    async def _request(self, method: str, endpoint: str, data: Any = None,
                       params: dict[str, Any] | None = None) -> Any:
        if method == "GET":
            r = await self.client.get(endpoint, headers=self._headers(), params=params)
        elif method == "POST":
            r = await self.client.post(endpoint, headers=self._headers(), json=data)
        else:
            r = await self.client.put(endpoint, headers=self._headers(), json=data)
        self.responses.append(r)
        r.raise_for_status()
        return r.json()

    @staticmethod
    def _now() -> str:
        return datetime.utcnow().isoformat()  # naive UTC, as the original sends  # noqa: DTZ003

    async def send_heartbeat(self) -> Any:
        data = {"callback_url": self.callback_url} if self.callback_url else None
        return await self._request("POST", f"{API}/heartbeat", data=data)

    async def pull_feeds(self) -> list[dict[str, Any]]:
        return (await self._request("GET", f"{API}/feeds")).get("data", [])

    async def pull_message_tasks(self) -> list[dict[str, Any]]:
        return (await self._request("GET", f"{API}/message-tasks")).get("data", [])

    async def report_task_result(self, task_id: str, results: list[dict[str, Any]]) -> Any:
        return await self._request("POST", f"{API}/report-result", data={
            "task_id": task_id, "results": results, "timestamp": self._now()})

    async def claim_task(self) -> dict[str, Any] | None:
        data = (await self._request("POST", f"{API}/claim-task")).get("data")
        return data if isinstance(data, dict) and "allocation_id" in data else None

    async def get_pending_tasks(self, limit: int = 1) -> dict[str, Any] | None:
        data = (await self._request("GET", f"{API}/pending-tasks",
                                    params={"limit": limit})).get("data")
        return data if isinstance(data, dict) and "task_id" in data else None

    async def update_task_status(self, allocation_id: str, status: str,
                                 error_message: str | None = None) -> Any:
        return await self._request("PUT", f"{API}/task-status", data={
            "allocation_id": allocation_id, "status": status, "error_message": error_message,
            "timestamp": self._now()})

    async def upload_articles(self, allocation_id: str, articles: list[dict[str, Any]]) -> Any:
        self.uploaded.extend(articles)
        return await self._request("POST", f"{API}/upload-articles", data={
            "allocation_id": allocation_id, "articles": articles, "timestamp": self._now()})

    async def report_task_completion(self, allocation_id: str, task_id: str,
                                     results: list[dict[str, Any]], article_count: int) -> Any:
        return await self._request("POST", f"{API}/report-completion", data={
            "allocation_id": allocation_id, "task_id": task_id, "results": results,
            "article_count": article_count, "timestamp": self._now()})

    # --- sync service ---------------------------------------------------------------------

    async def sync_feeds(self) -> int:
        feeds = await self.pull_feeds()
        for f in feeds:
            local = self.local_feeds.setdefault(f["id"], {"status": f.get("status")})
            local.update({k: f.get(k) for k in ("mp_name", "mp_cover", "mp_intro",
                                                 "faker_id")})
        return len(feeds)

    async def sync_message_tasks(self) -> int:
        tasks = await self.pull_message_tasks()
        for t in tasks:
            mps = json.loads(t["mps_id"])  # a JSON string in the original's shape
            self.local_tasks[t["id"]] = {**t, "feeds": [m["id"] for m in mps]}
        return len(tasks)

    def _gather(self, feed_id: str, fakeid: str) -> list[dict[str, Any]]:
        """The crawler's callback: store each article, keep those new to the child."""
        fresh = []
        for data in self.crawl(feed_id, fakeid):
            art = {"id": str(data["id"]), "mp_id": data["mp_id"], "title": data["title"],
                   "url": data["link"], "pic_url": data["cover"],
                   "content": data.get("content", ""), "publish_time": data["update_time"]}
            if "digest" in data:
                art["description"] = data["digest"]
            if art["id"] not in self.local_articles:
                self.local_articles[art["id"]] = art
                art["ext"] = None
                fresh.append(art)
        return fresh

    async def claim_and_execute_task(self) -> bool:
        """Path B: the sync service's claim, run and report (webhook sent by the child)."""
        try:
            pkg = await self.claim_task()
            if not pkg:
                return False
            results = await self._execute_task(pkg)
            if results:
                await self.report_task_completion(
                    pkg.get("allocation_id"), pkg.get("task_id"), results,
                    sum(r.get("article_count", 0) for r in results))
            return True
        except Exception as exc:  # noqa: BLE001 - the original prints and goes on
            self.errors.append(f"认领/执行任务失败: {exc}")
            return True

    async def _execute_task(self, pkg: dict[str, Any]) -> list[dict[str, Any]]:
        results = []
        await self.update_task_status(pkg["allocation_id"], "executing")
        task = self.local_tasks.get(pkg["task_id"]) or {
            "id": pkg["task_id"], "name": pkg.get("task_name", "unknown"),
            "message_type": pkg.get("message_type", 0),
            "message_template": pkg.get("message_template", ""),
            "web_hook_url": pkg.get("web_hook_url", ""), "headers": pkg.get("headers", ""),
            "cookies": pkg.get("cookies", "")}
        for feed_data in pkg.get("feeds", []):
            feed_id = feed_data.get("id")
            name = feed_data.get("mp_name", feed_id)
            feed = self.local_feeds.get(feed_id)
            if feed is None:
                results.append({"feed_id": feed_id, "mp_name": name, "success": False,
                                "article_count": 0, "new_article_count": 0,
                                "error": "公众号不存在"})
                continue
            articles = self._gather(feed_id, feed.get("faker_id") or "")
            if articles:  # do_job sends the webhook only when it found new articles
                self.webhooks_sent.append({"url": task.get("web_hook_url"),
                                           "headers": task.get("headers"),
                                           "cookies": task.get("cookies"),
                                           "articles": len(articles)})
            results.append({"feed_id": feed_id, "mp_name": name, "success": True,
                            "article_count": 0, "new_article_count": 0, "error": None})
        return results

    # --- task worker (path A) -------------------------------------------------------------

    async def worker_once(self) -> bool:
        """One round of the task worker: claim and execute through path A."""
        try:
            pkg = await self.claim_task()
        except Exception as exc:  # noqa: BLE001
            self.errors.append(f"从父节点获取任务失败: {exc}")
            return False
        if not pkg:
            return False  # 暂无任务，等待下次轮询...
        await self.execute_parent_task(pkg)
        return True

    async def execute_parent_task(self, pkg: dict[str, Any],
                                  between: Callable[[], Any] | None = None) -> None:
        allocation_id = pkg.get("allocation_id")
        try:
            try:
                await self.update_task_status(allocation_id, "executing")
            except Exception as exc:  # noqa: BLE001
                self.errors.append(f"更新任务状态失败: {exc}")
            feeds = []
            for fd in pkg.get("feeds", []):
                if fd["id"] not in self.local_feeds:
                    self.local_feeds[fd["id"]] = {
                        "faker_id": fd.get("faker_id"), "mp_name": fd["mp_name"],
                        "mp_cover": fd["mp_cover"], "mp_intro": fd["mp_intro"],
                        "status": fd["status"]}
                feeds.append((fd["id"], self.local_feeds[fd["id"]]))
            _task = {"id": pkg["task_id"], "name": pkg["task_name"],
                     "message_type": pkg["message_type"],
                     "message_template": pkg["message_template"],
                     "web_hook_url": pkg["web_hook_url"], "cron_exp": pkg.get("cron_exp", ""),
                     "headers": pkg.get("headers", ""), "cookies": pkg.get("cookies", "")}
            all_articles: list[dict[str, Any]] = []
            results = []
            for feed_id, feed in feeds:
                articles = self._gather(feed_id, feed.get("faker_id") or "")
                all_articles.extend(articles)
                results.append({"mp_id": feed_id, "mp_name": feed["mp_name"],
                                "status": "success", "article_count": len(articles)})
            if between is not None:
                await between()  # a long scrape: the test lets time pass here
            if all_articles:
                try:
                    await self.upload_articles(allocation_id, all_articles)
                except Exception as exc:  # noqa: BLE001
                    self.errors.append(f"上行文章数据失败: {exc}")
            try:
                await self.report_task_completion(allocation_id, pkg["task_id"], results,
                                                  len(all_articles))
            except Exception as exc:  # noqa: BLE001
                self.errors.append(f"上报任务结果失败: {exc}")
        except Exception as exc:  # noqa: BLE001
            self.errors.append(f"执行父节点任务失败: {exc!r}")
            await self.update_task_status(allocation_id, "failed", error_message=str(exc))
