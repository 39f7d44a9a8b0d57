"""Text from files and pull requests made inert in GitHub Markdown: the one escaping module of every Markdown
writer (the generated leaderboard and taxonomy pages, model pages, the bot's comment and its local preview).

:func:`inline` gives text that renders as itself on one line: ``&``, ``<`` and ``>`` as entities (no HTML),
Markdown punctuation backslash-escaped (no links, images, emphasis, code or table breaks), ``@`` followed by a
zero-width space (no @mention or email autolink), and the autolink literals GitHub recognises without
brackets (``www.``, ``http://``, ``https://``, ``ftp://``, ``mailto:``, ``xmpp:``) broken by a zero-width
space after ``www`` or the scheme name, so they are no link even where GitHub links at render time, after
escapes are gone. Bidirectional controls (U+200E, U+200F, U+202A-U+202E, U+2066-U+2069), which would reorder
the text around them, are dropped everywhere, code spans and blocks included. :func:`link` renders a link
only to a validated https URL or to a path inside the repository; its text is Markdown the caller built,
with every piece that comes from a file passed through :func:`inline`.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

ZERO_WIDTH_SPACE = "\u200b"
_BIDI = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+!|~])")
_SCHEME = re.compile(r"(?i)(?<![a-z0-9])(https?|ftp|mailto|xmpp)(?=:)")
_WWW = re.compile(r"(?i)(?<![a-z0-9])(www)(?=\.)")
_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#@!$&'*+,;=%]+")
_HOST_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_INTERNAL_TARGET = re.compile(r"[A-Za-z0-9_.#/-]+")
_SPECIAL_IN_CELL = frozenset("\\|\r\n")


def without_bidi_controls(text: str) -> str:
    return _BIDI.sub("", text)


def bidi_as_json_escapes(json_text: str) -> str:
    """JSON text with each bidi control written as its ``\\uXXXX`` escape (they occur only inside strings)."""
    return _BIDI.sub(lambda match: f"\\u{ord(match[0]):04x}", json_text)


def inline(text: object, limit: int | None = None) -> str:
    """*text* on one line, rendered as itself: no Markdown, HTML, links, images, @mentions or reordering."""
    value = " ".join(without_bidi_controls(str(text)).split())
    if limit is not None:
        value = value[:limit]
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    value = _MARKDOWN_PUNCTUATION.sub(r"\\\1", value)
    value = value.replace("@", "@" + ZERO_WIDTH_SPACE)
    value = _SCHEME.sub(lambda match: match[1] + ZERO_WIDTH_SPACE, value)
    return _WWW.sub(lambda match: match[1] + ZERO_WIDTH_SPACE, value)


def code_span(text: object, limit: int = 200) -> str:
    """An inline code span (nothing inside one is rendered); backticks, line breaks and bidi controls dropped."""
    value = " ".join(without_bidi_controls(str(text)).replace("`", "'").split())[:limit]
    return f"`{value}`" if value else "``"


def fenced(text: str) -> str:
    """A fenced code block that *text* cannot close early, without bidi controls."""
    text = without_bidi_controls(text)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def https_url(url: object) -> str | None:
    """*url* if it is a plain https URL to a DNS name (no credentials, spaces, brackets, quotes or controls,
    nothing that could end a Markdown link target early); None otherwise."""
    if not isinstance(url, str) or len(url) > 2000 or not _URL_CHARS.fullmatch(url):
        return None
    try:
        parts = urlsplit(url)
        parts.port
    except ValueError:
        return None
    host = parts.hostname or ""
    labels = host.split(".")
    if (parts.scheme != "https" or "@" in parts.netloc or len(labels) < 2
            or not all(_HOST_LABEL.match(label) for label in labels) or labels[-1].isdigit()):
        return None
    return url


def link(markdown: str, target: str | None) -> str:
    """``[markdown](target)`` where *target* is a validated https URL or a path/anchor inside the repository;
    *markdown* alone otherwise. *markdown* is Markdown already: text from a file goes through :func:`inline`."""
    if not target:
        return markdown
    if target.startswith("https://"):
        safe = https_url(target)
    else:
        safe = target if _INTERNAL_TARGET.fullmatch(target) and "//" not in target else None
    return f"[{markdown}]({safe})" if safe else markdown


def escape_cell(text: str) -> str:
    """Markdown safe inside a pipe-table cell (a literal ``|`` would split the cell; newlines end the row)."""
    if _SPECIAL_IN_CELL.isdisjoint(text):
        return text
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
