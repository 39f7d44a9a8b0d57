"""Checkpoint download into a content-addressed cache: ``<cache>/sha256/<hex>``.

The URL's scheme, form and fields come from the scheme registry (:mod:`evaluator.registry.url_schemes`), which
names the scheme's downloader in :mod:`evaluator.checkpoint.sources`; :mod:`evaluator.checkpoint.download`
streams, caps, times and retries it.

Guarantees: a file enters ``sha256/`` only after its sha256 is computed (and, when pinned, matched), so nothing
parses unverified bytes; the size cap is enforced while streaming; an HTML page served instead of the file is
reported as such; transient failures (connection errors, timeouts, HTTP 5xx/429, truncated bodies) are retried
with backoff and resume from the bytes already received (HTTP ``Range``); on any final failure the partial file
is deleted, so nothing half-written stays in the cache. Only an interrupt (Ctrl-C) keeps the partial file, and
the next run resumes it. Partial files live in ``<cache>/partial/``, locks in ``<cache>/locks/``.

Every connection a download opens (the URL and each redirect hop) follows :mod:`evaluator.untrusted.egress`: https on
port 443 to a public DNS name whose addresses are all global (``http://127.0.0.1`` only under the tests'
loopback allowance). A download, retries included, ends by its deadline (``APB_DOWNLOAD_DEADLINE_S``) and is
abandoned when it receives less than ``APB_DOWNLOAD_MIN_BYTES_PER_S`` over ``APB_DOWNLOAD_WINDOW_S`` seconds.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import re
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from evaluator import paths
from evaluator.checkpoint.download import (DEFAULT_MAX_BYTES, DownloadLimits, DownloadOptions, default_backoff,
                                           refuse_html_file, with_retries)
from evaluator.errors import APBError, Problem
from evaluator.registry import url_schemes
from evaluator.untrusted import egress
from evaluator.untrusted.safeio import sha256_file

_SHA256 = re.compile(r"[0-9a-f]{64}")
_SOURCES = "evaluator.checkpoint."


def fetch_checkpoint(url: str, sha256: str | None, *, cache_dir: Path | None = None,
                     max_bytes: int = DEFAULT_MAX_BYTES, retries: int = 4, timeout: float = 60,
                     progress: bool = True, label: str = "",
                     backoff: Callable[[int], float] = default_backoff,
                     limits: DownloadLimits | None = None) -> Path:
    """The cached, sha256-verified file behind *url*: ``<cache>/sha256/<hex>``.

    *sha256* pins the expected content; None (only for ``apb lock`` and imported entries) downloads, hashes
    and caches whatever the source serves. *label* (the model key) starts every error message. *limits*
    (default: from the environment, :meth:`DownloadLimits.from_env`) bound the download's duration."""
    limits = limits or DownloadLimits.from_env()
    options = DownloadOptions(label or url, url, max_bytes, timeout, progress, limits,
                              time.monotonic() + limits.deadline_s)
    expected = _expected_sha256(sha256, options)
    cache = Path(cache_dir) if cache_dir is not None else paths.cache_dir()
    if expected and _verified(cache / "sha256" / expected, expected):
        return cache / "sha256" / expected
    download = _downloader(options)
    slot = hashlib.sha256(f"{url}\n{expected}".encode()).hexdigest()[:40]
    partial = cache / "partial" / f"{slot}.part"
    with _exclusive(cache / "locks" / f"{slot}.lock"):
        if expected and _verified(cache / "sha256" / expected, expected):
            return cache / "sha256" / expected  # another process finished it while we waited
        try:
            with egress.guarded_connections():
                try:
                    with_retries(lambda: download(partial, options), retries, backoff, options)
                except egress.RefusedDestination as refused:  # its text is the rule, nothing of a response
                    raise options.fail(f"the download was refused: {refused} (at the URL or one of its "
                                       "redirects)") from None
            digest = sha256_file(partial)
            refuse_html_file(partial, options)
            if expected and digest != expected:
                raise options.fail(f"sha256 mismatch: the manifest pins {expected} but the downloaded file "
                                   f"({partial.stat().st_size} bytes) has {digest}; the file changed at the "
                                   f"source or the pin is wrong")
            target = cache / "sha256" / digest
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(partial, target)
            return target
        except KeyboardInterrupt:
            raise  # keep the partial file: the next run resumes it
        except BaseException:
            _remove_partials(partial)
            raise


@dataclass(frozen=True)
class Checkpoint:
    """The bytes of a checkpoint, read once and verified: whatever parses them parses exactly what was hashed."""

    sha256: str
    data: bytes


def read_capped(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, label: str = "") -> bytes:
    """The bytes of the checkpoint file *path*, read once, refused above *max_bytes*."""
    if not Path(path).is_file():
        raise APBError(Problem(label or str(path), "no such file"))
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise APBError(Problem(label or str(path), f"the file is larger than the size cap ({max_bytes} bytes)"))
    return data


def read_verified(path: Path, expected: str | None = None, *, max_bytes: int = DEFAULT_MAX_BYTES,
                  label: str = "") -> Checkpoint:
    """Read *path* once into memory (at most *max_bytes*), hash those bytes and compare them with *expected*
    (default: the file's name, which is its sha256 in the cache). Loading from the returned bytes, never from
    the path again, closes the window in which another process sharing the cache could swap the file."""
    expected = expected or Path(path).name
    data = read_capped(path, max_bytes=max_bytes, label=label)
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        raise APBError(Problem(label or str(path), f"sha256 mismatch when reading the cached file: expected "
                                                   f"{expected}, read {digest}; the file changed after it was "
                                                   "verified (delete it from the cache and run again)"))
    return Checkpoint(digest, data)


def _downloader(options: DownloadOptions) -> Callable[[Path, DownloadOptions], None]:
    """The registry's downloader of the URL's scheme, with the URL's fields; the URL's form and, for a URL that
    names its host, the egress rule are checked first."""
    try:
        scheme, fields = url_schemes.parse(options.url)
    except ValueError as error:
        raise options.fail(str(error)) from None
    if scheme.host:
        parts = urllib.parse.urlsplit(options.url)
        try:
            egress.check_url_host(parts.hostname, parts.port, tls=scheme.host == "tls")
        except (ValueError, egress.RefusedDestination) as error:
            raise options.fail(f"the URL is refused: {error}") from None
    module, _, name = scheme.downloader.partition(":")
    download = getattr(importlib.import_module(_SOURCES + module), name)
    return lambda partial, options: download(partial, options, fields)


# ----------------------------------------------------------------------------------------------- helpers

def _expected_sha256(sha256: str | None, options: DownloadOptions) -> str | None:
    if sha256 is None:
        return None
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise options.fail(f"sha256 {sha256!r} is not 64 lowercase hex characters")
    return sha256


def _verified(path: Path, expected: str) -> bool:
    """True if the cached file is there and intact; a corrupted one is removed so it is fetched again."""
    if not path.is_file():
        return False
    if sha256_file(path) == expected:
        return True
    path.unlink()
    return False


def _remove_partials(partial: Path) -> None:
    """Delete *partial* and the ``<partial><random>.part`` files gdown leaves next to it."""
    for leftover in partial.parent.glob(f"{partial.name}*"):
        leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock so that concurrent runs do not download the same file into one partial."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as handle:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; concurrent downloads of one file are then unsafe
            yield
            return
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
