"""No link or image injection: text from taxonomy.json and records is escaped in every generated Markdown file,
URLs become links only when they are plain https; the bot comment breaks bare URLs, www. names, @mentions and
bidi controls from PR data (evaluator/untrusted/markdown_text.py, the one escaping module)."""
from __future__ import annotations

import json

from evaluator.ci.report import code, esc
from evaluator.render import render_all
from tests.support.leaderboard_repo import add_evaluated, make_repo

HYDRA = "HYDRA_Sehwag2020Hydra"
HOSTILE = ("Evil](https://evil.example/x) ![pixel](https://evil.example/p.png) <img src=x onerror=alert(1)> "
           "| cell www.evil.example https://evil.example/bare @maintainer \u202egnp.exe\u202c [ref]: https://e.example")
SCHEMA_VALID = ("Evil](https://evil.example/x) ![pixel](https://evil.example/p.png) www.evil.example "
                "https://evil.example/bare @maintainer [ref]: https://e.example")
RAW_MARKERS = ["](https://evil", "![pixel]", "<img src=x", "www.evil", "https://evil.example/bare", "@maintainer",
               "\u202e", "\u202c", "[ref]:"]


def raw_hits(text: str) -> list[str]:
    return [marker for marker in RAW_MARKERS if marker in text]


def test_inline_text_is_inert():
    from evaluator.untrusted.markdown_text import ZERO_WIDTH_SPACE, inline

    text = inline(HOSTILE)
    assert raw_hits(text) == [] and "\n" not in text
    assert "\\[" in text and "\\]" in text and "\\(" in text and "&lt;img" in text and "\\|" in text
    assert f"www{ZERO_WIDTH_SPACE}.evil.example" in text and f"https{ZERO_WIDTH_SPACE}://evil" in text
    assert f"@{ZERO_WIDTH_SPACE}maintainer" in text


def test_links_only_to_plain_https_urls_or_repository_paths():
    from evaluator.untrusted.markdown_text import https_url, link

    assert link("paper", "https://arxiv.org/abs/2409.01249") == "[paper](https://arxiv.org/abs/2409.01249)"
    assert link("row", "../leaderboard/README.md#cifar10") == "[row](../leaderboard/README.md#cifar10)"
    for target in ("javascript:alert(1)", "http://example.org/x", "https://evil.example/a) [b](https://c.example",
                   "https://user:pw@example.org/x", "https://10.0.0.1/x", "//evil.example/x", "https://evil .example",
                   "data:text/html,<b>"):
        assert link("paper", target) == "paper", target
        assert https_url(target) is None


def test_every_generated_markdown_file_escapes_taxonomy_and_record_text(tmp_path):
    root = make_repo(tmp_path)
    path = root / "submissions" / HYDRA / "taxonomy.json"
    entry = json.loads(path.read_text(encoding="utf-8"))
    entry.update(name="www.evil.example", title=SCHEMA_VALID, venue=SCHEMA_VALID,  # taxonomy.schema.json accepts
                 paper_url="https://evil.example/a)", code_url="https://evil.example/(x)")
    path.write_text(json.dumps(entry), encoding="utf-8")
    add_evaluated(root, f"{HYDRA}_R18_CIFAR10_US_90")
    record_path = next((root / "submissions" / HYDRA / "records").glob("*linf*.json"))
    record = json.loads(record_path.read_text(encoding="utf-8"))
    record["flags"][0]["message"] = HOSTILE
    record_path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    files = render_all(root)
    markdown = {str(name): data.decode("utf-8") for name, data in files.items() if str(name).endswith(".md")}
    assert {"taxonomy/README.md", "leaderboard/README.md"} <= set(markdown)
    assert any(name.startswith("leaderboard/models/") for name in markdown)
    shown = [name for name, text in markdown.items() if "Evil" in text]
    # the taxonomy entries (title, venue) are on their stage's page; the README's tables hold the name
    assert any(name.startswith("leaderboard/taxonomy/") for name in shown)
    assert any(name.startswith("leaderboard/models/") for name in shown)
    assert "www" in markdown["taxonomy/README.md"] and "www.evil" not in markdown["taxonomy/README.md"]
    for name, text in markdown.items():
        assert raw_hits(text) == [], name
        assert "](https://evil.example/a)" not in text and "](https://evil.example/(x)" not in text, name
        for line in text.splitlines():  # no | from the data splits a table cell
            if line.startswith("|") and "Evil" in line:
                assert "| cell" not in line, name


def test_the_bot_comment_breaks_bare_urls_mentions_and_bidi_controls():
    text = esc(HOSTILE)
    assert raw_hits(text) == []
    span = code("key\u202ename\u2066`")
    assert span == "`keyname'`"
