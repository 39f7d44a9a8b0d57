"""Where the benchmark lives (``evaluator/registry/home.yaml``): its GitHub repository, the address of its GitHub
Pages site and the paper of the original benchmark. One reader; the READMEs, the site and ``apb ci doctor`` use it."""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from evaluator.errors import APBError, Problem
from evaluator.paths import PACKAGE_DIR
from evaluator.untrusted.safeio import LineMap

HOME_FILE = PACKAGE_DIR / "registry" / "home.yaml"
HOME_FILE_SHOWN = HOME_FILE.relative_to(PACKAGE_DIR.parent)  # as messages name it: evaluator/registry/home.yaml
REPOSITORY_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")


@dataclass(frozen=True)
class Home:
    repository: str  # owner/name on GitHub
    pages_url: str  # the Pages site's address, ending in "/"
    paper_label: str
    paper_url: str

    @property
    def repository_url(self) -> str:
        return f"https://github.com/{self.repository}"


def same_site(a: str, b: str) -> bool:
    """Whether two site addresses are the same: scheme and host compared without case, the path without its
    trailing ``/`` (GitHub's ``html_url`` is ``https://owner.github.io/name/``, or a custom domain's root)."""
    first, second = urlsplit(a), urlsplit(b)
    return (first.scheme.lower(), first.netloc.lower(), first.path.rstrip("/")) == \
        (second.scheme.lower(), second.netloc.lower(), second.path.rstrip("/"))


def _https_url(value: Any, where: tuple[str, ...], problems: list[Problem], lines: LineMap) -> str:
    """*value* if it is an ``https://`` address, else ``""`` and a problem naming the field at *where*."""
    if not isinstance(value, str) or urlsplit(value).scheme != "https" or not urlsplit(value).netloc:
        problems.append(Problem(str(HOME_FILE), f"{'.'.join(where)}: must be an https:// address, got {value!r}",
                                lines.line(where)))
        return ""
    return value


@functools.lru_cache(maxsize=1)
def home() -> Home:
    """The file's facts; every mistake in it at once, naming the field."""
    from evaluator.registry.entries import read_registry

    data, lines = read_registry(HOME_FILE)
    problems: list[Problem] = []
    repository = data.get("repository")
    if not isinstance(repository, str) or not REPOSITORY_NAME.match(repository):
        problems.append(Problem(str(HOME_FILE), f"repository: must be GitHub's owner/name, got {repository!r}",
                                lines.line(("repository",))))
    pages_url = _https_url(data.get("pages_url"), ("pages_url",), problems, lines)
    paper_field = data.get("paper")
    paper: dict = paper_field if isinstance(paper_field, dict) else {}
    paper_url = _https_url(paper.get("url"), ("paper", "url"), problems, lines)
    if not isinstance(paper.get("label"), str) or not paper.get("label"):
        problems.append(Problem(str(HOME_FILE), "paper.label: must be the paper's short name (arXiv:NNNN.NNNNN)",
                                lines.line(("paper",))))
    if problems:
        raise APBError(problems)
    return Home(repository=str(repository), pages_url=pages_url.rstrip("/") + "/", paper_label=paper["label"],
                paper_url=paper_url)
