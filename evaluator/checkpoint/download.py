"""One download in progress: its options and limits (deadline, throughput floor, size cap), the streaming
of an http(s) body into the cache's partial file with resume, the refusal of HTML pages, and retries.

The fetcher (:mod:`evaluator.checkpoint.fetch`) runs a scheme's downloader (:mod:`evaluator.checkpoint.sources`)
under :func:`with_retries`; a downloader raises :class:`Transient` for a failure worth retrying and
``options.fail(...)`` for one that is not.
"""
from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from evaluator.errors import APBError, Problem

GiB = 1 << 30
DEFAULT_MAX_BYTES = 2 * GiB
CHUNK_BYTES = 1 << 20
DEADLINE_ENV, MIN_RATE_ENV, WINDOW_ENV = "APB_DOWNLOAD_DEADLINE_S", "APB_DOWNLOAD_MIN_BYTES_PER_S", "APB_DOWNLOAD_WINDOW_S"
DEFAULT_DEADLINE_S, DEFAULT_MIN_BYTES_PER_S, DEFAULT_WINDOW_S = 3600.0, 50_000.0, 60.0


def default_backoff(attempt: int) -> float:
    """Seconds to wait before retry number *attempt* + 1: 1, 2, 4, 8, ... capped at 60."""
    return float(min(60, 2**attempt))


class Transient(Exception):
    """A failure worth retrying (network trouble, server error, truncated body)."""


@dataclass(frozen=True)
class DownloadLimits:
    """How long a download may take: *deadline_s* for the whole download, retries and backoff included, and
    at least *min_bytes_per_s* over every *window_s* seconds of body."""

    deadline_s: float = DEFAULT_DEADLINE_S
    min_bytes_per_s: float = DEFAULT_MIN_BYTES_PER_S
    window_s: float = DEFAULT_WINDOW_S

    @classmethod
    def from_env(cls) -> "DownloadLimits":
        """The limits from ``APB_DOWNLOAD_DEADLINE_S``, ``APB_DOWNLOAD_MIN_BYTES_PER_S`` and
        ``APB_DOWNLOAD_WINDOW_S`` (positive numbers; unset: the defaults)."""
        values = {}
        for name, field_name in ((DEADLINE_ENV, "deadline_s"), (MIN_RATE_ENV, "min_bytes_per_s"),
                                 (WINDOW_ENV, "window_s")):
            text = os.environ.get(name)
            if text is None:
                continue
            try:
                value = float(text)
            except ValueError:
                value = -1.0
            if not value > 0 or value != value or value == float("inf"):
                raise APBError(Problem(name, f"{text!r} is not a positive number of "
                                             f"{'bytes per second' if name == MIN_RATE_ENV else 'seconds'}"))
            values[field_name] = value
        return cls(**values)


@dataclass(frozen=True)
class DownloadOptions:
    """One download: its name in messages (the model key), URL, size cap, socket timeout, progress bar, limits."""

    label: str
    url: str
    max_bytes: int
    timeout: float
    progress: bool
    limits: DownloadLimits
    ends_at: float  # time.monotonic() by which the download, retries included, is over

    def fail(self, message: str) -> APBError:
        return APBError(Problem(self.label, f"{message} [{self.url}]"))

    def read_timeout(self) -> float:
        """The socket timeout for the next read: the configured one, never past the deadline."""
        return max(0.05, min(self.timeout, self.ends_at - time.monotonic()))

    def check_deadline(self, received: int) -> None:
        if time.monotonic() >= self.ends_at:
            raise self.fail(deadline_message(received, self.limits))


def stream_url(partial: Path, options: DownloadOptions, url: str) -> None:
    """Stream the http(s) *url* into *partial*, resuming from the bytes already there."""
    import requests

    offset = partial.stat().st_size if partial.is_file() else 0
    headers = {"Accept-Encoding": "identity"}  # byte offsets must be those of the file on disk
    if offset:
        headers["Range"] = f"bytes={offset}-"
    options.check_deadline(offset)
    try:
        response = requests.get(url, headers=headers, stream=True, timeout=options.read_timeout())
    except (requests.ConnectionError, requests.Timeout) as error:
        raise Transient(f"{type(error).__name__}: {error}") from None
    with response:
        status = response.status_code
        if status == 416 and offset:
            partial.unlink()
            raise Transient("the server refused to resume; starting over")
        if status == 429 or status >= 500:
            raise Transient(f"HTTP {status} {response.reason}")
        if status >= 400:
            raise options.fail(f"HTTP {status} {response.reason}: the file is not available at this URL")
        if status == 206 and not _resumes_at(response, offset):
            partial.unlink(missing_ok=True)
            raise Transient("the server answered a different byte range; starting over")
        if status != 206:
            offset = 0  # a full body: start the file over
        announced = _announced_length(response)
        total = None if announced is None else offset + announced
        if total is not None and total > options.max_bytes:
            raise options.fail(too_big(total, options))
        if "text/html" in response.headers.get("Content-Type", "").lower():
            raise options.fail(_HTML_MESSAGE)
        received = _stream(response, partial, offset, total, options)
    if total is not None and received < total:
        raise Transient(f"truncated download: received {received} of {total} bytes")


def _stream(response, partial: Path, offset: int, total: int | None, options: DownloadOptions) -> int:
    """Append the response body to *partial* (truncating it first when *offset* is 0); bytes now on disk."""
    import requests
    from tqdm import tqdm

    partial.parent.mkdir(parents=True, exist_ok=True)
    received = offset
    rate = RateFloor(options, received)
    with open(partial, "ab" if offset else "wb") as out, \
            tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=options.label, file=sys.stderr,
                 disable=not options.progress, leave=False) as bar:
        try:
            for chunk in _chunks(response, options):
                if received == 0 and _looks_like_html(chunk):
                    raise options.fail(_HTML_MESSAGE)
                received += len(chunk)
                if received > options.max_bytes:
                    raise options.fail(too_big(received, options))
                out.write(chunk)
                bar.update(len(chunk))
                options.check_deadline(received)
                rate.check(received)
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                TimeoutError) as error:
            out.flush()
            options.check_deadline(received)
            raise Transient(f"connection broke after {received} bytes ({type(error).__name__})") from None
    return received


def _chunks(response, options: DownloadOptions) -> Iterator[bytes]:
    """The body as it arrives (``read1``: whatever bytes are there, at most a chunk), each read waiting no
    longer than the configured timeout nor past the deadline, so that a trickle cannot hide in a long read."""
    import urllib3

    raw = response.raw
    while True:
        sock = _socket_of(raw)
        if sock is not None:
            sock.settimeout(options.read_timeout())
        try:
            chunk = raw.read1(CHUNK_BYTES, decode_content=False)
        except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ProtocolError) as error:
            raise TimeoutError(str(type(error).__name__)) from None
        if not chunk:
            return
        yield chunk


def _socket_of(raw) -> Any:
    """The socket under a urllib3 response, where it can be reached (to shorten its read timeout)."""
    connection = getattr(raw, "_connection", None) or getattr(raw, "connection", None)
    return getattr(connection, "sock", None)


class RateFloor:
    """Refuses a body that arrives slower than ``min_bytes_per_s`` over a whole window."""

    def __init__(self, options: DownloadOptions, received: int) -> None:
        self.options = options
        self.since, self.at_start = time.monotonic(), received

    def check(self, received: int) -> None:
        limits, now = self.options.limits, time.monotonic()
        elapsed = now - self.since
        if elapsed < limits.window_s:
            return
        rate = (received - self.at_start) / elapsed
        if rate < limits.min_bytes_per_s:
            raise self.options.fail(
                f"the download is too slow: {rate:,.0f} bytes/s over the last {elapsed:.0f} s, below the "
                f"minimum of {limits.min_bytes_per_s:,.0f} bytes/s ({MIN_RATE_ENV}); {received:,} bytes "
                "received. Try again later or host the file elsewhere")
        self.since, self.at_start = now, received


def _resumes_at(response, offset: int) -> bool:
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return match is not None and int(match[1]) == offset


def _announced_length(response) -> int | None:
    try:
        return int(response.headers["Content-Length"])
    except (KeyError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------- helpers

_HTML_MESSAGE = ("the server sent an HTML page instead of the checkpoint (for Google Drive: the file is not "
                 "shared with 'Anyone with the link', or its download quota is exceeded)")


def _looks_like_html(head: bytes) -> bool:
    """Checkpoints start with a zip, pickle or safetensors header, never with ``<``; web pages do."""
    return head[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<")


def refuse_html_file(path: Path, options: DownloadOptions) -> None:
    with open(path, "rb") as handle:
        if _looks_like_html(handle.read(1024)):
            raise options.fail(_HTML_MESSAGE)


def deadline_message(received: int, limits: DownloadLimits) -> str:
    return (f"the download did not finish within its deadline of {limits.deadline_s:g} s ({DEADLINE_ENV}); "
            f"{received:,} bytes received. Try again later or host the file elsewhere")


def too_big(size: int, options: DownloadOptions) -> str:
    return (f"the file is larger than the size cap ({size} > {options.max_bytes} bytes); "
            f"raise the cap only for a checkpoint you trust to be this large")


def with_retries(action: Callable[[], None], retries: int, backoff: Callable[[int], float],
                  options: DownloadOptions) -> None:
    for attempt in range(retries + 1):
        try:
            return action()
        except Transient as error:
            if attempt == retries:
                raise options.fail(f"download failed after {retries + 1} attempts: {error}") from None
            delay = backoff(attempt)
            if time.monotonic() + delay >= options.ends_at:
                raise options.fail(f"{error}; the deadline of {options.limits.deadline_s:g} s ({DEADLINE_ENV}) "
                                   "leaves no time for a retry") from None
            print(f"{options.label}: {error}; retrying in {delay:.0f} s ({attempt + 1}/{retries})", file=sys.stderr)
            time.sleep(delay)
