"""The closed registry of checkpoint URL schemes (``evaluator/registry/url_schemes.yaml``).

Each scheme is one entry: its syntax (a regular expression whose named groups are the URL's fields), how it
is written, whether manifests accept it, the egress rule it is under, the hints for its host's page links and
the downloader that fetches it. ``apb validate``, the manifest schema and the fetcher read every scheme fact
from here, so they cannot disagree; none of them names a scheme.
"""
from __future__ import annotations

import functools
import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from evaluator.errors import APBError, Problem
from evaluator.paths import PACKAGE_DIR
from evaluator.registry.url_hints import is_commit

SCHEMES_FILE = PACKAGE_DIR / "registry" / "url_schemes.yaml"
_HINT_PREFIX = "evaluator.registry."
MANIFEST_USES = ("accepted", "local", "refused")
HOST_RULES = ("tls", "plain")


@dataclass(frozen=True)
class Pin:
    """A field that must be a 40-hex commit in a manifest, and what to say when it is not."""

    field: str
    absent: str
    moving: str
    fix: str


@dataclass(frozen=True)
class UrlScheme:
    """One checkpoint URL scheme of the registry."""

    name: str
    syntax: re.Pattern[str]
    form: str
    example: str
    wrong_form: str
    manifests: str  # accepted | local | refused
    downloader: str  # "<module>:<callable>" inside evaluator.checkpoint
    refusal: str = ""
    host: str | None = None  # tls | plain: the URL names the host a download connects to
    pin: Pin | None = None
    hints: tuple[str, ...] = ()

    @property
    def prefix(self) -> str:
        return f"{self.name}://"

    def fields(self, url: str) -> dict[str, str | None] | None:
        """The URL's fields (the syntax's named groups), or None when *url* is not of this scheme's form."""
        if url[:len(self.prefix)].lower() != self.prefix:
            return None
        match = self.syntax.fullmatch(self.prefix + url[len(self.prefix):])  # the scheme in any letter case
        return None if match is None else match.groupdict()

    def pin_problem(self, fields: dict[str, str | None]) -> str | None:
        """What is wrong with the pinned field of a manifest's URL (a branch, a tag, nothing), or None."""
        if self.pin is None:
            return None
        value = fields.get(self.pin.field)
        if value and is_commit(value):
            return None
        given = self.pin.moving.format(**fields) if value else self.pin.absent
        return f"{given}: {self.pin.fix.format(**fields)}"


@functools.lru_cache(maxsize=1)
def schemes() -> dict[str, UrlScheme]:
    """Every registered scheme by name, in file order."""
    return _read(SCHEMES_FILE)


def _read(path: Path) -> dict[str, UrlScheme]:
    from evaluator.untrusted.safeio import load_yaml

    data, lines = load_yaml(path)
    found: dict[str, UrlScheme] = {}
    problems = []
    for name, spec in ((data or {}).get("schemes") or {}).items():
        where = ("schemes", name)
        try:
            pin = spec.get("pin")
            scheme = UrlScheme(
                name=name, syntax=re.compile(spec["syntax"]), form=spec["form"], example=spec["example"],
                wrong_form=spec["wrong_form"], manifests=spec["manifests"], downloader=spec["downloader"],
                refusal=spec.get("refusal", ""), host=spec.get("host"), pin=None if pin is None else Pin(**pin),
                hints=tuple(spec.get("hints") or ()))
        except (KeyError, TypeError, AttributeError, re.error) as error:
            problems.append(Problem(str(path), f"scheme {name!r}: needs syntax (a regular expression), form, example, "
                                               f"wrong_form, manifests and downloader ({error})", lines.line(where)))
            continue
        if not re.fullmatch(r"[a-z][a-z0-9+.-]*", name) or not scheme.syntax.pattern.startswith(f"^{name}://"):
            problems.append(Problem(str(path), f"scheme {name!r}: a lowercase URL scheme whose syntax starts with "
                                               f"^{name}://", lines.line(where)))
        if scheme.manifests not in MANIFEST_USES or scheme.host not in (None, *HOST_RULES):
            problems.append(Problem(str(path), f"scheme {name!r}: manifests is one of {', '.join(MANIFEST_USES)}, host "
                                               f"one of {', '.join(HOST_RULES)}", lines.line(where)))
        if scheme.manifests != "accepted" and not scheme.refusal:
            problems.append(Problem(str(path), f"scheme {name!r}: a scheme manifests do not accept needs its refusal",
                                    lines.line(where)))
        found[name] = scheme
    if problems:
        raise APBError(problems)
    return found


def scheme_of(url: str) -> UrlScheme | None:
    """The registered scheme *url* is written in (its letters in any case), or None."""
    name = url.split("://", 1)[0].lower() if "://" in url else ""
    return schemes().get(name)


def parse(url: str) -> tuple[UrlScheme, dict[str, str | None]]:
    """(the scheme, the URL's fields); ``ValueError`` saying which forms exist, or the form to write."""
    scheme = scheme_of(url)
    if scheme is None:
        raise ValueError(f"unsupported URL scheme in {url!r}: use {_listing([s.form for s in schemes().values()])}")
    fields = scheme.fields(url)
    if fields is None:
        raise ValueError(scheme.wrong_form)
    return scheme, fields


def accepted_prefixes() -> str:
    """The schemes manifests accept, as a message lists them: ``https://, gdrive:// or hf://``."""
    return _listing([scheme.prefix for scheme in schemes().values() if scheme.manifests == "accepted"])


def refusal(scheme: UrlScheme) -> str:
    """Why a manifest may not use *scheme* (the accepted schemes filled in)."""
    return scheme.refusal.format(accepted=accepted_prefixes())


def schema_url(definition: dict[str, Any]) -> None:
    """Fill the manifest schema's ``url`` definition: the pattern of every scheme a manifest may name (accepted or
    local; ``apb validate`` says which need ``--allow-file-urls``) and the hint that lists the accepted forms."""
    usable = [scheme for scheme in schemes().values() if scheme.manifests != "refused"]
    definition["pattern"] = "^(" + "|".join(re.escape(scheme.prefix) for scheme in usable) + ")"
    definition["x-hint"] = "use " + _listing([s.form for s in schemes().values() if s.manifests == "accepted"])


def rewrite_hint(url: str) -> str | None:
    """What to write instead of *url*, when a scheme's hint recognises it as a page or share link; else None."""
    for scheme in schemes().values():
        for hint in scheme.hints:
            message = _hint(hint)(url)
            if message:
                return message
    return None


@functools.lru_cache(maxsize=None)  # a registry's few names, looked up for every manifest URL
def _hint(name: str) -> Callable[[str], str | None]:
    module, _, attribute = name.partition(":")
    return getattr(importlib.import_module(_HINT_PREFIX + module), attribute)


def _listing(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"
