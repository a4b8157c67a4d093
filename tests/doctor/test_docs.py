"""docs/troubleshooting.md covers every symptom of the original guide and every doctor check."""

from __future__ import annotations

import re
from pathlib import Path

from cascade_cli.doctor import CHECKS

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "troubleshooting.md"
GUIDE = Path("/work/shared/seed/troubleshooting-guide.zh.md")

SYMPTOMS = [
    "级联客户端未初始化",
    "请求父节点失败: 404 - Not Found",
    "请求父节点失败: Connection refused",
    "暂无任务，等待下次轮询...",
    "处理公众号失败 xxx: ...",
    "执行父节点任务失败: ...",
    "ModuleNotFoundError: No module named 'core'",
]
CAUSES = ["级联模式未启用", "配置不完整（缺少parent_api_url/api_key/api_secret）",
          "配置文件未正确加载", "父节点地址错误", "父节点未启动", "网络不通", "API Key/Secret 错误",
          "父节点没有分配任务", "任务已分配给其他节点", "任务状态不是pending", "公众号不存在",
          "网络问题", "微信接口限制", "配置错误"]


def test_every_guide_symptom_and_cause_is_quoted_exactly() -> None:
    doc = DOC.read_text(encoding="utf-8")
    for text in SYMPTOMS + CAUSES:
        assert text in doc, text
    if GUIDE.exists():  # the list above is the guide's own wording
        guide = GUIDE.read_text(encoding="utf-8")
        for text in SYMPTOMS + CAUSES:
            assert text in guide, text


def test_every_guide_table_row_is_mapped() -> None:
    doc = DOC.read_text(encoding="utf-8")
    if not GUIDE.exists():
        return
    guide = GUIDE.read_text(encoding="utf-8")
    table = guide.split("## 常见问题速查表", 1)[1]
    rows = [r for r in table.splitlines() if r.startswith("| ") and "---" not in r][1:]
    assert len(rows) == 5
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert " / ".join(cells) in doc, cells


def test_every_check_is_documented() -> None:
    doc = DOC.read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `([a-z_.]+)` \|", doc, flags=re.M))
    assert listed == {c.name for c in CHECKS}
