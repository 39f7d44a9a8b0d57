"""Checkpoint URLs that look right but do not serve the file: the form to write instead.

A browser's share or view link is not a download link: Google Drive's ``/file/d/<id>/view`` page and the
Hugging Face Hub's ``/blob/`` page are HTML, and ``hf://owner/repo/blob/main/x.pt`` names a file called
``blob/main/x.pt``. Each function here recognises one such form and says what to write; the scheme it points
to names it under ``hints`` in ``url_schemes.yaml``, and ``apb validate`` asks every one.
"""
from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

_DRIVE_HOSTS = ("drive.google.com", "docs.google.com")
_DRIVE_FILE_PATH = re.compile(r"^/file/(?:u/\d+/)?d/(?P<id>[A-Za-z0-9_-]{10,200})(?:/.*)?$")
_DRIVE_QUERY_PATHS = ("/open", "/uc", "/u/0/uc")
_HF_HOSTS = ("huggingface.co", "www.huggingface.co", "hf.co")
_HF_PAGE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/(?P<kind>blob|resolve|raw)/(?P<rev>[^/]+)/(?P<path>.+)$")
_HF_SCHEME_BLOB = re.compile(r"^hf://(?P<repo>[^/]+/[^/]+)/(?P<kind>blob|resolve|tree)/(?P<rev>[^/@]+)/(?P<path>[^@]+)$")


def drive_link(url: str) -> str | None:
    """A Google Drive share or page link: the ``gdrive://<id>`` to write."""
    parts = urlsplit(url)
    if parts.scheme != "https" or (parts.hostname or "").lower() not in _DRIVE_HOSTS:
        return None
    file_id = drive_file_id(url)
    if file_id:
        return (f"a Google Drive share or page link is an HTML page, not the file; write gdrive://{file_id} "
                "(and share the file with 'Anyone with the link')")
    return "a Google Drive link needs the file's id: write gdrive://<file id> (from the share link's /d/<id>/)"


def hf_page_link(url: str) -> str | None:
    """A Hugging Face Hub ``/blob/`` or ``/raw/`` page, or a ``/resolve/`` link that follows a branch: the
    pinned ``hf://`` URL to write."""
    parts = urlsplit(url)
    if parts.scheme != "https" or (parts.hostname or "").lower() not in _HF_HOSTS:
        return None
    match = _HF_PAGE.match(parts.path)
    if match and match["kind"] in ("blob", "raw"):
        return (f"a Hugging Face /{match['kind']}/ link is the file's web page, not the file; write "
                f"hf://{match['repo']}/{match['path']}@{pinned(match['rev'])} (pin the revision to a commit hash)")
    if match and not is_commit(match["rev"]):
        return (f"a Hugging Face /resolve/{match['rev']}/ link follows a branch or tag, which can move to other "
                f"bytes; write hf://{match['repo']}/{match['path']}@{pinned(match['rev'])}")
    return None


def hf_path_with_revision(url: str) -> str | None:
    """An ``hf://`` URL that copies the page's ``/blob/<revision>/`` into the path: the URL to write."""
    match = _HF_SCHEME_BLOB.match(url)
    if match:
        return (f"hf:// URLs name the path inside the repository, without /{match['kind']}/<revision>/: "
                f"write hf://{match['repo']}/{match['path']}@{pinned(match['rev'])}")
    return None


def is_commit(revision: str) -> bool:
    """Whether *revision* is a full commit hash (a branch or tag can move)."""
    return re.fullmatch(r"[0-9a-f]{40}", revision) is not None


def pinned(revision: str) -> str:
    """*revision* when it is a commit hash; else the placeholder that says one is needed (a branch can move)."""
    return revision if is_commit(revision) else f"<40-hex commit of {revision}>"


def drive_file_id(url: str) -> str | None:
    """The file id in a Google Drive link (``/file/d/<id>/view``, ``open?id=<id>``, ``uc?id=<id>``)."""
    parts = urlsplit(url)
    match = _DRIVE_FILE_PATH.match(parts.path)
    if match:
        return match["id"]
    if parts.path in _DRIVE_QUERY_PATHS:
        ids = parse_qs(parts.query).get("id") or []
        if ids and re.fullmatch(r"[A-Za-z0-9_-]{10,200}", ids[0]):
            return ids[0]
    return None
