"""The dashboard's labels in English and Chinese, and which one a request gets.

The language is the ``cascade_lang`` cookie (set by the switch in the page header) when it
names a known language, else the first known language of ``Accept-Language``, else English.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request

LANG_COOKIE = "cascade_lang"
LANGUAGES = ("en", "zh")
DEFAULT = "en"

MESSAGES: dict[str, dict[str, str]] = {
    "title": {"en": "Cascade parent", "zh": "Cascade 父节点"},
    "overview": {"en": "Overview", "zh": "概览"},
    "nodes": {"en": "Nodes", "zh": "节点"},
    "runs": {"en": "Runs", "zh": "运行"},
    "feeds": {"en": "Feeds", "zh": "订阅源"},
    "tasks": {"en": "Tasks", "zh": "任务"},
    "logout": {"en": "Log out", "zh": "退出登录"},
    "login": {"en": "Log in", "zh": "登录"},
    "login_help": {"en": "Paste an admin token (create one on the parent host with "
                         "'cascade token create'). It is kept in a cookie of this browser only.",
                   "zh": "粘贴管理员令牌（在父节点主机上用 'cascade token create' 创建）。"
                         "令牌只保存在本浏览器的 Cookie 中。"},
    "admin_token": {"en": "Admin token", "zh": "管理员令牌"},
    "login_failed": {"en": "Login refused", "zh": "登录被拒绝"},
    "node_credential_refused": {
        "en": "This is a node credential: only admin tokens can log in to the dashboard.",
        "zh": "这是节点凭据：只有管理员令牌可以登录控制台。"},
    "nodes_online": {"en": "Nodes online", "zh": "在线节点"},
    "nodes_offline": {"en": "Nodes not online", "zh": "非在线节点"},
    "runs_24h": {"en": "Runs in the last 24 h", "zh": "最近 24 小时的运行"},
    "pending": {"en": "Pending", "zh": "待领取"},
    "claimed": {"en": "Claimed", "zh": "已领取"},
    "executing": {"en": "Executing", "zh": "执行中"},
    "completed": {"en": "Completed", "zh": "已完成"},
    "failed": {"en": "Failed", "zh": "失败"},
    "timeout": {"en": "Timed out", "zh": "超时"},
    "failed_feeds": {"en": "Failed feeds", "zh": "抓取失败的订阅源"},
    "webhook_backlog": {"en": "Webhook backlog", "zh": "Webhook 积压"},
    "webhook_dead": {"en": "dead", "zh": "已放弃"},
    "name": {"en": "Name", "zh": "名称"},
    "status": {"en": "Status", "zh": "状态"},
    "last_heartbeat": {"en": "Last heartbeat", "zh": "最后心跳"},
    "running_capacity": {"en": "Running / capacity", "zh": "运行中 / 容量"},
    "host": {"en": "Host", "zh": "主机"},
    "version": {"en": "Version", "zh": "版本"},
    "actions": {"en": "Actions", "zh": "操作"},
    "enable": {"en": "Enable", "zh": "启用"},
    "disable": {"en": "Disable", "zh": "停用"},
    "rotate": {"en": "Rotate secret", "zh": "轮换密钥"},
    "revoke": {"en": "Revoke", "zh": "吊销"},
    "confirm_rotate": {"en": "Issue a new secret for this node? The old one keeps working "
                             "for the configured overlap.",
                       "zh": "为该节点签发新密钥？旧密钥在配置的重叠期内仍然有效。"},
    "confirm_revoke": {"en": "Revoke this node's credentials now? It can no longer connect.",
                       "zh": "立即吊销该节点的凭据？它将无法再连接。"},
    "secret_once": {"en": "New credentials - shown only once, copy them now:",
                    "zh": "新凭据——只显示这一次，请立即复制："},
    "never": {"en": "never", "zh": "从未"},
    "ago": {"en": "{n} ago", "zh": "{n}前"},
    "unit_s": {"en": "s", "zh": "秒"},
    "unit_min": {"en": "min", "zh": "分钟"},
    "unit_h": {"en": "h", "zh": "小时"},
    "unit_d": {"en": "d", "zh": "天"},
    "online": {"en": "online", "zh": "在线"},
    "offline": {"en": "offline", "zh": "离线"},
    "never seen": {"en": "never seen", "zh": "从未上线"},
    "disabled": {"en": "disabled", "zh": "已停用"},
    "revoked": {"en": "revoked", "zh": "已吊销"},
    "running": {"en": "running", "zh": "运行中"},
    "finished": {"en": "finished", "zh": "已结束"},
    "run": {"en": "Run", "zh": "运行"},
    "task": {"en": "Task", "zh": "任务"},
    "trigger": {"en": "Trigger", "zh": "触发方式"},
    "created": {"en": "Created", "zh": "创建时间"},
    "finished_at": {"en": "Finished", "zh": "结束时间"},
    "allocations": {"en": "Allocations", "zh": "分配"},
    "open": {"en": "open", "zh": "未完成"},
    "node": {"en": "Node", "zh": "节点"},
    "attempt": {"en": "Attempt", "zh": "尝试次数"},
    "articles": {"en": "Articles (new)", "zh": "文章（新）"},
    "error": {"en": "Error", "zh": "错误"},
    "feed_results": {"en": "Per-feed results", "zh": "各订阅源结果"},
    "deliveries": {"en": "Deliveries", "zh": "推送"},
    "channel": {"en": "Channel", "zh": "渠道"},
    "attempts": {"en": "Attempts", "zh": "尝试"},
    "duration": {"en": "Duration", "zh": "耗时"},
    "feed": {"en": "Feed", "zh": "订阅源"},
    "last_fetch": {"en": "Last fetch", "zh": "最后抓取"},
    "last_status": {"en": "Last result", "zh": "最后结果"},
    "failure_streak": {"en": "Failures in a row", "zh": "连续失败次数"},
    "cron": {"en": "Cron", "zh": "Cron 表达式"},
    "next_fire": {"en": "Next fire times", "zh": "下次触发时间"},
    "last_run": {"en": "Last run", "zh": "最近运行"},
    "dispatch_now": {"en": "Dispatch now", "zh": "立即分发"},
    "enabled": {"en": "enabled", "zh": "已启用"},
    "time_zone": {"en": "Times in", "zh": "时区"},
    "none_yet": {"en": "Nothing yet.", "zh": "暂无数据。"},
    "no_cron": {"en": "no schedule (manual only)", "zh": "无计划（仅手动）"},
    "live": {"en": "live", "zh": "实时"},
    "stale": {"en": "updates paused - retrying", "zh": "更新暂停——正在重试"},
    "feeds_count": {"en": "Feeds", "zh": "订阅源数"},
    "details": {"en": "details", "zh": "详情"},
    "action_failed": {"en": "Action failed", "zh": "操作失败"},
    "total": {"en": "total", "zh": "共"},
    "all_runs": {"en": "All runs", "zh": "全部运行"},
    "success": {"en": "success", "zh": "成功"},
    "not_modified": {"en": "not modified", "zh": "未变化"},
    "delivered": {"en": "delivered", "zh": "已送达"},
    "dead": {"en": "dead", "zh": "已放弃"},
    "cron_trigger": {"en": "cron", "zh": "定时"},
    "manual": {"en": "manual", "zh": "手动"},
    "api": {"en": "api", "zh": "API"},
}


def pick(request: Request) -> str:
    """The language for this request (see the module's docstring)."""
    chosen = request.cookies.get(LANG_COOKIE)
    if chosen in LANGUAGES:
        return chosen
    header = request.headers.get("accept-language", "")[:512]
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate(header.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        base = tag.strip().lower().split("-")[0]
        if base in LANGUAGES and quality > 0:
            ranked.append((-quality, i, base))
    return min(ranked)[2] if ranked else DEFAULT


def translator(lang: str) -> Callable[..., str]:
    def t(key: str, **values: object) -> str:
        entry = MESSAGES.get(key)
        text = entry.get(lang, entry[DEFAULT]) if entry else key
        return text.format(**values) if values else text
    return t
