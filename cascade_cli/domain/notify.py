"""Run notifications: a durable webhook outbox (table ``deliveries``) and its sender.

Queueing (``queue_run_notifications``), by the notifier, for each finished run not queued yet
    Finishing a run only marks it finished (``store.runs``); every notifier pass first looks
    for finished runs whose ``notified_at`` is empty and queues each in its own transaction.
    The transaction starts with a conditional UPDATE that sets ``notified_at``: of several
    parent processes exactly one queues a run (the others' UPDATE changes nothing), and runs
    finished while no notifier ran (``parent.notify.enabled: false``, a parent started
    without it) are queued by the next one that does. As the sender also only runs once per
    pass, a message goes out in the same pass that queues it: no later than before.
    One row per feed of the run with new articles (``Article.schedule_run_id == run``), with
    ``idempotency_key = "<run>:<feed>"`` (unique: a run never queues a feed twice). What the
    message is made of (the template, its type and the context built from the articles as they
    are now) is stored with the row (``content_type = UNRENDERED``): a restart, a template edit
    or a deleted article never changes a queued message. It is *rendered* by the sender, before
    the first send and outside any transaction (a render may take up to
    ``templates.RENDER_SECONDS``; inside the queueing transaction it would hold the run's
    row lock and, on SQLite, the database's write lock), and the rendered body replaces it.
    A webhook URL that is invalid gives a row that is ``dead`` at once; a template that
    cannot be rendered makes the row ``dead`` when the sender gets to it, with the error.
    Nothing crashes, and the problem shows in ``cascade deliveries list``.

Sending (``Notifier``)
    * Claim: a conditional UPDATE sets ``locked_until`` on a due ``pending`` row; only the
      process whose UPDATE changed the row sends it, so several parent processes can share the
      outbox. A crashed sender's lock simply expires.
    * Every request has a timeout (``parent.notify.timeout`` per phase, and the same again as
      a deadline for reading the answer); requests run in a small thread pool so a hanging
      receiver never holds up the others.
    * Retried, with exponential backoff (``backoff_base * 2**(attempt-1)``, capped by
      ``backoff_max``) and jitter: network errors and timeouts, 5xx, 408, 429 (at least the
      ``Retry-After`` it asks for) and the rate-limit codes WeCom/DingTalk/Feishu put inside
      an HTTP 200. After ``max_attempts`` the row is ``dead`` with its last error.
    * Dead at once (retrying cannot help): any other 4xx, an error code inside a WeCom /
      DingTalk / Feishu 200 answer, a redirect to another host, an invalid request.
    * Redirects are not followed blindly: a redirect to the same scheme, host and port is
      followed (the same POST re-sent, at most 3 hops); one to another host or from https to
      http is refused, because the request carries the task's headers, cookies and signature.
    * Headers: ``X-Cascade-Timestamp``, ``X-Cascade-Signature: sha256=<hex HMAC-SHA256 of
      "{timestamp}.{body}" with the task's webhook_secret>``, ``X-Cascade-Delivery`` and
      ``Idempotency-Key`` (the idempotency key), then the task's own headers and cookies.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx

from cascade_cli import __version__
from cascade_cli.clock import Clock, isoformat_z
from cascade_cli.config import Settings
from cascade_cli.domain import templates
from cascade_cli.domain.metrics import Metrics
from cascade_cli.errors import InvalidInput
from cascade_cli.httpdates import retry_after_seconds
from cascade_cli.store import deliveries as outbox
from cascade_cli.store import runs as run_repo
from cascade_cli.store.deliveries import list_deliveries, retry_dead, retry_delivery
from cascade_cli.store.engine import Store, after_commit
from cascade_cli.store.events import log_event
from cascade_cli.store.models import (
    DELIVERY_DEAD,
    DELIVERY_DELIVERED,
    DELIVERY_PENDING,
    Delivery,
    MessageTask,
)
from cascade_cli.webhook_url import validate_webhook_url

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger("cascade.notify")

# ``cascade deliveries`` reads and requeues the outbox through these (store.deliveries).
__all__ = ["Notifier", "delivery_dict", "list_deliveries", "queue_run_notifications",
           "render_delivery", "retry_dead", "retry_delivery"]

CLAIM_BATCH = 20
QUEUE_BATCH = 100  # finished runs queued per pass
SEND_CONCURRENCY = 8
MAX_REDIRECTS = 3
MAX_RESPONSE_BYTES = 64 * 1024
_RESERVED = {"host", "content-length", "transfer-encoding", "connection", "x-cascade-timestamp",
             "x-cascade-signature", "x-cascade-delivery", "idempotency-key"}
# Rate limiting reported inside an HTTP 200: WeCom 45009, DingTalk 130101, Feishu 9499/11232.
_RATE_LIMIT_CODES = {45009, 130101, 9499, 11232}


# A queued row whose body is still the template, its type and the context (JSON).
UNRENDERED = "application/x-cascade-unrendered+json"


@dataclass(frozen=True)
class _Template:
    """What ``templates.build_message`` reads of a task."""

    message_template: str | None
    message_type: int


def render_delivery(snapshot: str, url: str) -> templates.Rendered:
    """The message of a queued row from its stored template and context (bounded render).
    Raises ``templates.RenderError``."""
    try:
        data = json.loads(snapshot)
        template = _Template(data.get("template"), int(data.get("message_type") or 0))
        context = data["context"]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise templates.RenderError(f"queued message is unreadable: {exc}") from None
    return templates.build_message(template, context, url)


# --- queueing ------------------------------------------------------------------------------


def queue_run_notifications(s: Session, now: datetime, run_id: str, settings: Settings) -> int:
    """Queue one delivery per feed of the run with new articles; returns how many were queued
    (``pending``). Once per run: the first call claims the run (``runs.claim_notification``,
    a conditional UPDATE of ``notified_at``), and any later or concurrent one adds nothing."""
    if not run_repo.claim_notification(s, now, run_id):
        return 0
    run, task = outbox.run_task(s, run_id)
    if run is None or task is None or not (task.web_hook_url or "").strip():
        return 0
    counts = outbox.new_article_counts(s, run_id)
    if not counts:
        return 0
    existing = outbox.queued_keys(s, run_id)
    order = {fid: i for i, fid in enumerate(task.mps_id or [])}
    queued = dead = 0
    for feed_id in sorted(counts, key=lambda f: (order.get(f, len(order)), f)):
        key = f"{run_id}:{feed_id}"
        if key in existing:
            continue
        row = _build_delivery(s, now, settings, task, run_id, feed_id, counts[feed_id], key)
        if not outbox.add_delivery(s, row):
            continue  # queued concurrently by another process: once is enough
        if row.status == DELIVERY_PENDING:
            queued += 1
        else:
            dead += 1
            log_event(s, now, "notification", direction="outbound", status="failed",
                      task_id=task.id, error=row.last_error,
                      detail={"delivery_id": row.id, "schedule_run_id": run_id,
                              "feed_id": feed_id})
    if queued or dead:
        line = (f"run {run_id} of task {task.name}: {queued} notifications queued"
                + (f", {dead} not sendable (cascade deliveries list)" if dead else ""))
        after_commit(s, lambda: log.info("%s", line))
    return queued


def _build_delivery(s: Session, now: datetime, settings: Settings, task: MessageTask,
                    run_id: str, feed_id: str, count: int, key: str) -> Delivery:
    url = (task.web_hook_url or "").strip()
    row = Delivery(idempotency_key=key, schedule_run_id=run_id, task_id=task.id,
                   feed_id=feed_id, url=url[:4096], body="", status=DELIVERY_PENDING,
                   attempts=0, max_attempts=settings.parent.notify.max_attempts,
                   next_attempt_at=now, created_at=now, updated_at=now)
    try:
        validate_webhook_url(url)
        row.channel = templates.channel_for_url(url)
        feed, arts = outbox.run_feed_articles(s, run_id, feed_id)
        # Newest first; portable (MySQL has no NULLS LAST).
        arts.sort(key=lambda a: (a.publish_time is not None,
                                 a.publish_time or a.created_at, a.created_at), reverse=True)
        context = templates.build_context(task, feed, feed_id, arts, now, total=count)
        # Rendered by the sender, outside this transaction (see the module's docstring).
        row.body = json.dumps({"template": task.message_template,
                               "message_type": task.message_type or 0, "context": context},
                              ensure_ascii=False, default=str)
        row.content_type = UNRENDERED
    except InvalidInput as exc:
        row.status = DELIVERY_DEAD
        row.last_error = f"not sent: {exc}"[:4000]
        row.next_attempt_at = None
    return row


# --- sending -------------------------------------------------------------------------------


@dataclass
class _Job:
    id: str
    key: str
    url: str
    body: str
    content_type: str
    channel: str
    attempts: int
    max_attempts: int
    lock: datetime
    task_id: str
    headers: dict[str, Any] | None
    cookies: str | None
    secret: str | None
    # For the log line of the outcome: which task and feed the operator should look at.
    task_name: str = ""
    feed_id: str | None = None
    rendered: bool = False  # rendered in this pass: the body is stored with the outcome


@dataclass
class Outcome:
    kind: str  # "delivered" | "retry" | "dead"
    error: str | None = None
    status_code: int | None = None
    retry_after: float | None = None


def sign(secret: str, timestamp: str, body: str) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def parse_cookies(text: str | None) -> str | None:
    """``k=v; k2=v2`` (also with newlines or stray spaces) -> a Cookie header value."""
    if not text or not text.strip():
        return None
    pairs = []
    for part in text.replace("\n", ";").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name.strip():
            pairs.append(f"{name.strip()}={value.strip()}")
    return "; ".join(pairs) or None


def _clean_header(value: str) -> str:
    if any(c in value for c in "\r\n\0"):
        raise InvalidInput("a header value contains a line break", field="headers")
    return value


def build_headers(job: _Job, timestamp: str) -> dict[str, str]:
    headers: dict[str, str] = {"Content-Type": job.content_type,
                               "User-Agent": f"Cascade/{__version__} (webhook)"}
    custom = job.headers if isinstance(job.headers, dict) else {}
    cookie_parts = []
    for name, value in custom.items():
        lname = str(name).strip().lower()
        if not lname or lname in _RESERVED:
            continue
        if lname == "cookie":
            cookie_parts.append(_clean_header(str(value)))
            continue
        for existing in [k for k in headers if k.lower() == lname]:
            del headers[existing]
        headers[_clean_header(str(name).strip())] = _clean_header(str(value))
    cookie = parse_cookies(job.cookies)
    if cookie:
        cookie_parts.append(_clean_header(cookie))
    if cookie_parts:
        headers["Cookie"] = "; ".join(cookie_parts)
    headers["X-Cascade-Timestamp"] = timestamp
    headers["X-Cascade-Delivery"] = job.key
    headers["Idempotency-Key"] = job.key
    if job.secret:
        headers["X-Cascade-Signature"] = sign(job.secret, timestamp, job.body)
    return headers


def _channel_error(channel: str, body: bytes) -> tuple[int, str] | None:
    """WeCom, DingTalk and Feishu answer HTTP 200 with an error code inside."""
    if channel not in ("wecom", "dingtalk", "feishu"):
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    keys = (("errcode", "errmsg"), ("code", "msg"), ("StatusCode", "StatusMessage"))
    for code_key, msg_key in keys:
        code = data.get(code_key)
        if isinstance(code, int) and not isinstance(code, bool) and code != 0:
            return code, str(data.get(msg_key, ""))[:300]
    return None


def _same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    return (a.scheme, a.host, a.port or {"http": 80, "https": 443}.get(a.scheme)) == (
        b.scheme, b.host, b.port or {"http": 80, "https": 443}.get(b.scheme))


class Notifier:
    """Sends due deliveries. ``deliver_due()`` is one pass; ``run()`` repeats it."""

    def __init__(self, store: Store, clock: Clock, settings: Settings, *,
                 transport: httpx.BaseTransport | None = None,
                 rng: random.Random | None = None, metrics: Metrics | None = None) -> None:
        self.metrics = metrics
        self.store = store
        self.clock = clock
        self.settings = settings
        self.cfg = settings.parent.notify
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self.client = httpx.Client(timeout=httpx.Timeout(self.cfg.timeout),
                                   follow_redirects=False, transport=transport,
                                   limits=httpx.Limits(max_connections=SEND_CONCURRENCY * 2))
        # A claim lasts longer than the slowest possible send (every redirect hop timing out).
        self.lock_seconds = self.cfg.timeout * 2 * (MAX_REDIRECTS + 1) + 30

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- one pass -------------------------------------------------------------------------

    def queue_finished(self, *, limit: int = QUEUE_BATCH) -> int:
        """Queue the notifications of finished runs not queued yet, one transaction per run;
        returns how many deliveries were queued."""
        with self.store.session() as s:
            run_ids = run_repo.unnotified_runs(s, limit=limit)
        queued = 0
        for run_id in run_ids:
            try:
                with self.store.session() as s:
                    queued += queue_run_notifications(s, self.clock.now(), run_id,
                                                      self.settings)
            except Exception:  # one run that cannot be queued must not hold up the others
                log.exception("notify: queueing the notifications of run %s failed; "
                              "retried on the next pass", run_id)
        return queued

    def deliver_due(self, *, limit: int = CLAIM_BATCH) -> int:
        """One pass: queue what finished runs have to say (``queue_finished``), then claim
        and send the due deliveries; returns how many were attempted."""
        self.queue_finished()
        jobs = self._claim(self.clock.now(), limit)
        if not jobs:
            return 0
        with ThreadPoolExecutor(max_workers=min(SEND_CONCURRENCY, len(jobs)),
                                thread_name_prefix="cascade-notify") as pool:
            outcomes = list(pool.map(self._send_safely, jobs))
        for job, outcome in zip(jobs, outcomes, strict=True):
            self._record(job, outcome)
        return len(jobs)

    def _claim(self, now: datetime, limit: int) -> list[_Job]:
        lock = now + timedelta(seconds=self.lock_seconds)
        jobs: list[_Job] = []
        with self.store.session() as s:
            due = outbox.due_ids(s, now, limit)
        for delivery_id in due:
            with self.store.session() as s:
                got = outbox.claim(s, now, delivery_id, lock)
                if got is None:
                    continue  # another process claimed it first
                d, task = got
                jobs.append(_Job(
                    d.id, d.idempotency_key, d.url, d.body, d.content_type, d.channel,
                    d.attempts, d.max_attempts, lock, d.task_id,
                    task.headers if task else None, task.cookies if task else None,
                    task.webhook_secret if task else None,
                    task.name if task else "", d.feed_id))
                if task is None:
                    jobs[-1].url = ""  # marks "task deleted" for _send
        return jobs

    def _send_safely(self, job: _Job) -> Outcome:
        try:
            if job.content_type == UNRENDERED:
                if not job.url:
                    return Outcome("dead", "the message task was deleted")
                # In the sender's thread, outside any transaction; bounded by templates.
                try:
                    message = render_delivery(job.body, job.url)
                except templates.RenderError as exc:
                    return Outcome("dead", f"not sent: {exc}")
                job.body, job.content_type, job.channel = (message.body, message.content_type,
                                                           message.channel)
                job.rendered = True
            return self.send(job)
        except Exception as exc:  # a bug in one delivery must not lose the others' results
            log.exception("notify: delivery %s failed unexpectedly", job.id)
            return Outcome("retry", f"internal error: {type(exc).__name__}: {exc}")

    def send(self, job: _Job) -> Outcome:
        if not job.url:
            return Outcome("dead", "the message task was deleted")
        try:
            validate_webhook_url(job.url)
            timestamp = str(int(self.clock.now().timestamp()))
            headers = build_headers(job, timestamp)
        except InvalidInput as exc:
            return Outcome("dead", f"invalid request: {exc}")
        content = job.body.encode("utf-8")
        url = httpx.URL(job.url)
        timeout = self.cfg.timeout
        for _hop in range(MAX_REDIRECTS + 1):
            # Network deadlines are real elapsed time, not scheduled time: time.monotonic.
            deadline = time.monotonic() + 2 * timeout
            try:
                with self.client.stream("POST", url, content=content, headers=headers) as resp:
                    data = b""
                    for chunk in resp.iter_bytes():
                        data += chunk
                        if len(data) >= MAX_RESPONSE_BYTES:
                            break
                        if time.monotonic() > deadline:
                            raise httpx.ReadTimeout("answer too slow", request=resp.request)
            except httpx.TimeoutException as exc:
                return Outcome("retry", f"timeout after {timeout:g}s "
                                        f"({type(exc).__name__}) posting to {url.host}")
            except httpx.TransportError as exc:
                return Outcome("retry", f"network error posting to {url.host}: "
                                        f"{type(exc).__name__}: {exc}"[:1000])
            except (httpx.InvalidURL, ValueError) as exc:
                return Outcome("dead", f"invalid request: {exc}")
            code = resp.status_code
            if resp.is_redirect:
                target = url.join(resp.headers.get("location", ""))
                if not _same_origin(url, target):
                    return Outcome("dead", f"HTTP {code}: redirected to another host or "
                                           f"scheme ({target.scheme}://{target.host}); "
                                           "not followed - set the webhook URL to the final "
                                           "address", code)
                url = target
                continue
            return self._classify(job, code, resp.headers, data)
        return Outcome("dead", f"more than {MAX_REDIRECTS} redirects", None)

    def _classify(self, job: _Job, code: int, headers: httpx.Headers, data: bytes) -> Outcome:
        snippet = data[:300].decode("utf-8", "replace").strip()
        if 200 <= code < 300:
            err = _channel_error(job.channel, data)
            if err is None:
                return Outcome("delivered", None, code)
            kind = "retry" if err[0] in _RATE_LIMIT_CODES else "dead"
            return Outcome(kind, f"HTTP {code} but the {job.channel} receiver refused it: "
                                 f"code {err[0]} {err[1]}", code)
        if code == 429:
            return Outcome("retry", f"HTTP 429 rate limited: {snippet}", code,
                           retry_after_seconds(headers.get("retry-after"), self.clock.now()))
        if code >= 500 or code == 408:
            return Outcome("retry", f"HTTP {code}: {snippet}", code,
                           retry_after_seconds(headers.get("retry-after"), self.clock.now()))
        return Outcome("dead", f"HTTP {code} (not retried: the receiver refused the request): "
                               f"{snippet}", code)

    def backoff(self, attempts: int, retry_after: float | None = None) -> float:
        """Seconds before the next attempt: exponential with jitter, >= Retry-After."""
        base = min(self.cfg.backoff_max, self.cfg.backoff_base * 2 ** max(0, attempts - 1))
        delay = base / 2 + self.rng.random() * base / 2
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.cfg.backoff_max))
        return delay

    def _record(self, job: _Job, outcome: Outcome) -> None:
        now = self.clock.now()
        attempts = job.attempts + 1
        values: dict[str, Any] = {"attempts": attempts, "updated_at": now, "locked_until": None,
                                  "last_status_code": outcome.status_code}
        if job.rendered:  # every later attempt sends (and signs) exactly this body
            values.update(body=job.body, content_type=job.content_type, channel=job.channel)
        if outcome.kind == "delivered":
            values.update(status=DELIVERY_DELIVERED, delivered_at=now, last_error=None,
                          next_attempt_at=None)
        elif outcome.kind == "retry" and attempts < job.max_attempts:
            delay = self.backoff(attempts, outcome.retry_after)
            values.update(last_error=(outcome.error or "")[:4000],
                          next_attempt_at=now + timedelta(seconds=delay))
        else:
            error = outcome.error or "failed"
            if outcome.kind == "retry":
                error = f"gave up after {attempts} attempts: {error}"
            values.update(status=DELIVERY_DEAD, last_error=error[:4000], next_attempt_at=None)
        with self.store.session() as s:
            if not outbox.record(s, job.id, job.lock, values):
                log.warning("notify: delivery %s lost its claim while sending (%s)", job.id,
                            outcome.kind)
                return
            if values.get("status") in (DELIVERY_DELIVERED, DELIVERY_DEAD):
                ok = values["status"] == DELIVERY_DELIVERED
                log_event(s, now, "notification", direction="outbound",
                          status="ok" if ok else "failed", task_id=job.task_id,
                          count=attempts, error=None if ok else values["last_error"],
                          detail={"delivery_id": job.id, "channel": job.channel,
                                  "status_code": outcome.status_code})
        self._tell(job, attempts, values.get("status"), outcome)

    def _tell(self, job: _Job, attempts: int, final: str | None, outcome: Outcome) -> None:
        if self.metrics is not None:
            self.metrics.deliveries.labels("dead" if final == DELIVERY_DEAD
                                           else outcome.kind).inc()
        what = (f"webhook delivery {job.id} of task {job.task_name or job.task_id}, "
                f"feed {job.feed_id or '-'} ({job.channel}, attempt {attempts}/"
                f"{job.max_attempts})")
        if outcome.kind == "delivered":
            log.info("%s delivered (HTTP %s)", what, outcome.status_code)
        elif final == DELIVERY_DEAD:
            log.error("%s dead, not retried: %s (cascade deliveries retry %s)", what,
                      outcome.error, job.id)
        else:
            log.warning("%s failed, will retry: %s", what, outcome.error)

    # --- the loop -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        interval = self.cfg.poll_interval
        log.info("notifier started (poll every %gs)", interval)
        try:
            while not stop.is_set():
                try:
                    attempted = await asyncio.to_thread(self.deliver_due)
                except Exception:  # a database outage must not kill the loop
                    log.exception("notifier pass failed; retrying in %gs", interval)
                    attempted = 0
                if attempted >= CLAIM_BATCH:
                    continue  # more may be due right now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=interval)
        finally:
            self.close()
            log.info("notifier stopped")


# --- outbox administration (cascade deliveries ...) ---------------------------------------


def delivery_dict(d: Delivery) -> dict[str, Any]:
    return {"id": d.id, "idempotency_key": d.idempotency_key, "task_id": d.task_id,
            "schedule_run_id": d.schedule_run_id, "feed_id": d.feed_id, "channel": d.channel,
            "url_host": httpx.URL(d.url).host if d.url else None, "status": d.status,
            "attempts": d.attempts, "max_attempts": d.max_attempts,
            "next_attempt_at": isoformat_z(d.next_attempt_at), "last_error": d.last_error,
            "last_status_code": d.last_status_code, "created_at": isoformat_z(d.created_at),
            "updated_at": isoformat_z(d.updated_at), "delivered_at": isoformat_z(d.delivered_at)}
