"""Template validation (line and column), the sandbox, JSON templates and webhook URLs."""

from __future__ import annotations

import json

import pytest

from cascade_cli.domain import templates as t
from cascade_cli.errors import InvalidInput
from cascade_cli.webhook_url import validate_webhook_url


@pytest.mark.parametrize("source,line,col,words", [
    ("Hello {{ feed.mp_name }}\n{% for a in articles %}\n- {{ a.title }}\n{% endfo %}\n",
     4, 4, "unknown tag 'endfo'"),
    ("ok\nx {{ a.title b }} y", 2, 14, "end of print statement"),
    ("line one\n{{ \"unclosed }}", 2, 4, "unexpected char"),
    ("a {% if articles %} b", 1, 22, "Unexpected end of template"),
    ("x\n\n  {{ 1 +* 2 }}", 3, 9, "unexpected '*'"),
    ("{{ feed | nofilter }}", 1, 11, "No filter named 'nofilter'"),
])
def test_syntax_errors_name_line_and_column(source, line, col, words):
    with pytest.raises(InvalidInput) as err:
        t.validate_template(source, 0)
    msg = str(err.value)
    assert f"line {line}, column {col}" in msg, msg
    assert words in msg
    assert err.value.field == "message_template"


def test_unknown_name_is_reported_with_position():
    with pytest.raises(InvalidInput, match=r"line 2, column 13: unknown name 'artcles'"):
        t.validate_template("hi\n{% for a in artcles %}{{ a }}{% endfor %}", 0)


def test_unknown_attribute_caught_by_sample_render():
    with pytest.raises(InvalidInput, match=r"line 2, column 11: .*no attribute 'nope'"):
        t.validate_template("a\nb {{ feed.nope }}", 0)


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ feed.__class__ }}",
    "{{ articles.__class__.__base__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{% for x in ().__class__.__base__.__subclasses__() %}{{ x }}{% endfor %}",
    "{{ now.format.__globals__ }}",
])
def test_sandbox_escapes_are_refused_at_save(source):
    with pytest.raises(InvalidInput, match="sandbox|unsafe|no attribute"):
        t.validate_template(source, 0)


def test_sandbox_escape_at_render_time_is_a_clear_error():
    with pytest.raises(t.RenderError, match="refused by the sandbox"):
        t.render_template("{{ feed.__class__.__mro__ }}", 0, t.sample_context())


def test_huge_range_is_refused():
    with pytest.raises(InvalidInput, match="range|larger than"):
        t.validate_template("{% for i in range(10**9) %}x{% endfor %}", 0)


def test_default_text_template_lists_title_link_and_time():
    out = t.render_template(None, 0, t.sample_context())
    assert "Example: 2 new articles" in out
    assert "[He said \"hi\" and left](https://example.org/1) (2026-01-01 09:00 UTC)" in out
    assert "[标题](https://example.org/2)" in out


def test_default_json_template_is_valid_json():
    data = json.loads(t.render_template(None, 1, t.sample_context()))
    assert set(data) >= {"feed", "articles", "task", "now"}
    assert data["articles"][0]["title"] == 'He said "hi"\nand left'


def test_json_template_escapes_interpolated_strings():
    out = t.render_template('{"t": "{{ articles[0].title }}", "d": "{{ articles[0].description }}"}',
                            1, t.sample_context())
    assert json.loads(out) == {"t": 'He said "hi"\nand left', "d": 'line1\nline2 \\ "q"'}


def test_json_template_that_renders_invalid_json_is_refused():
    with pytest.raises(InvalidInput, match="valid JSON.*tojson"):
        t.validate_template('{"title": {{ articles[0].title }}}', 1)
    with pytest.raises(InvalidInput, match="valid JSON"):
        t.validate_template("not json at all", 1)


def test_empty_template_means_default_and_bad_message_type():
    t.validate_template("", 0)
    t.validate_template(None, 1)
    with pytest.raises(InvalidInput, match="message_type"):
        t.validate_template("x", 7)


@pytest.mark.parametrize("url", ["https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=1",
                                 "http://127.0.0.1:8080/hook", "  https://h.example.org/x  "])
def test_valid_webhook_urls(url):
    assert validate_webhook_url(url) == url.strip()


@pytest.mark.parametrize("url,words", [
    ("ftp://h.example.org/x", "http:// or https://"),
    ("file:///etc/passwd", "http:// or https://"),
    ("javascript:alert(1)", "http:// or https://"),
    ("qyapi.weixin.qq.com/send", "http:// or https://"),
    ("https://", "no host"),
    ("https://exa mple.org/", "spaces"),
    ("http://h.example.org:99999/", "malformed"),
    ("", "empty"),
])
def test_invalid_webhook_urls(url, words):
    with pytest.raises(InvalidInput, match=words) as err:
        validate_webhook_url(url)
    assert err.value.field == "web_hook_url"


@pytest.mark.parametrize("url,channel", [
    ("https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=1", "wecom"),
    ("https://oapi.dingtalk.com/robot/send?access_token=1", "dingtalk"),
    ("https://open.feishu.cn/open-apis/bot/v2/hook/1", "feishu"),
    ("https://open.larksuite.com/open-apis/bot/v2/hook/1", "feishu"),
    ("https://api.day.app/key/", "bark"),
    ("https://day.app/key/", "bark"),
    ("https://qyapi.weixin.qq.com.evil.example/x", "generic"),
    ("https://example.org/hook", "generic"),
])
def test_channel_from_host(url, channel):
    assert t.channel_for_url(url) == channel


@pytest.mark.parametrize("source,words", [
    ("{{ 'a' * 1000000000 }}", "repetition"),
    ("{{ articles * 10000000 }}", "repetition"),
    ("{{ 'a'.center(1000000000) }}", "larger than"),
    ("{{ 2 ** 100000 }}", "exponent"),
    ("{{" + "(" * 3000 + "1" + ")" * 3000 + "}}", "nested too deeply"),
    ("{{ lipsum(1000000) }}", "unknown name 'lipsum'"),
])
def test_resource_guards(source, words):
    with pytest.raises(InvalidInput, match=words):
        t.validate_template(source, 0)
