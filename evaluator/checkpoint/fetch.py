"""Checkpoint download into a content-addressed cache: ``<cache>/sha256/<hex>``.

Sources: ``https://``, ``gdrive://<id>`` (gdown, which follows
Drive's virus-scan confirmation page), ``hf://owner/repo/path[@revision]`` (the Hub's ``/resolve/`` URL, built by
``huggingface_hub.hf_hub_url`` and streamed here so the size cap and resume apply) and ``file://``.

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
import os
import re
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from evaluator import paths

from evaluator.untrusted import egress
from evaluator.errors import APBError, Problem
from evaluator.untrusted.safeio import sha256_file

GiB = 1 << 30
DEFAULT_MAX_BYTES = 2 * GiB
GDRIVE_URL_ENV = "APB_GDRIVE_URL"  # a URL template with {id}; tests point it at a local server
GDRIVE_URL_DEFAULT = "https://drive.google.com/uc?id={id}"
CHUNK_BYTES = 1 << 20
DEADLINE_ENV, MIN_RATE_ENV, WINDOW_ENV = "APB_DOWNLOAD_DEADLINE_S", "APB_DOWNLOAD_MIN_BYTES_PER_S", "APB_DOWNLOAD_WINDOW_S"
DEFAULT_DEADLINE_S, DEFAULT_MIN_BYTES_PER_S, DEFAULT_WINDOW_S = 3600.0, 50_000.0, 60.0
_SHA256 = re.compile(r"[0-9a-f]{64}")
_GDRIVE_ID = re.compile(r"[-\w]+")


def default_backoff(attempt: int) -> float:
    """Seconds to wait before retry number *attempt* + 1: 1, 2, 4, 8, ... capped at 60."""
    return float(min(60, 2**attempt))


class _Transient(Exception):
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
class _Options:
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
            raise self.fail(_deadline_message(received, self.limits))


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
    options = _Options(label or url, url, max_bytes, timeout, progress, limits, time.monotonic() + limits.deadline_s)
    expected = _expected_sha256(sha256, options)
    cache = Path(cache_dir) if cache_dir is not None else paths.cache_dir()
    if expected and _verified(cache / "sha256" / expected, expected):
        return cache / "sha256" / expected
    download = _downloader(url, options)
    slot = hashlib.sha256(f"{url}\n{expected}".encode()).hexdigest()[:40]
    partial = cache / "partial" / f"{slot}.part"
    with _exclusive(cache / "locks" / f"{slot}.lock"):
        if expected and _verified(cache / "sha256" / expected, expected):
            return cache / "sha256" / expected  # another process finished it while we waited
        try:
            with egress.guarded_connections():
                try:
                    _with_retries(lambda: download(partial, options), retries, backoff, options)
                except egress.RefusedDestination as refused:  # its text is the rule, nothing of a response
                    raise options.fail(f"the download was refused: {refused} (at the URL or one of its "
                                       "redirects)") from None
            digest = sha256_file(partial)
            _refuse_html_file(partial, options)
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


def describe_source(url: str) -> str:
    """Which of the supported sources *url* is: https, http (tests' loopback only), gdrive, hf or file."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme in ("https", "http", "gdrive", "hf", "file"):
        return scheme
    raise ValueError(f"unsupported URL scheme in {url!r}: use https://, gdrive://<id>, hf://owner/repo/path or file://")


# ----------------------------------------------------------------------------------------------- sources

def _downloader(url: str, options: _Options) -> Callable[[Path, _Options], None]:
    try:
        kind = describe_source(url)
    except ValueError as error:
        raise options.fail(str(error)) from None
    if kind in ("https", "http"):
        parts = urllib.parse.urlsplit(url)
        try:
            port = parts.port
            egress.check_url_host(parts.hostname, port, tls=kind == "https")
        except (ValueError, egress.RefusedDestination) as error:
            raise options.fail(f"the URL is refused: {error}") from None
    return {"https": _download_http, "http": _download_http, "gdrive": _download_gdrive,
            "hf": _download_hf, "file": _download_file}[kind]


def _download_http(partial: Path, options: _Options, url: str | None = None) -> None:
    """Stream *url* (default: the entry's URL) into *partial*, resuming from the bytes already there."""
    import requests

    url = url or options.url
    offset = partial.stat().st_size if partial.is_file() else 0
    headers = {"Accept-Encoding": "identity"}  # byte offsets must be those of the file on disk
    if offset:
        headers["Range"] = f"bytes={offset}-"
    options.check_deadline(offset)
    try:
        response = requests.get(url, headers=headers, stream=True, timeout=options.read_timeout())
    except (requests.ConnectionError, requests.Timeout) as error:
        raise _Transient(f"{type(error).__name__}: {error}") from None
    with response:
        status = response.status_code
        if status == 416 and offset:
            partial.unlink()
            raise _Transient("the server refused to resume; starting over")
        if status == 429 or status >= 500:
            raise _Transient(f"HTTP {status} {response.reason}")
        if status >= 400:
            raise options.fail(f"HTTP {status} {response.reason}: the file is not available at this URL")
        if status == 206 and not _resumes_at(response, offset):
            partial.unlink(missing_ok=True)
            raise _Transient("the server answered a different byte range; starting over")
        if status != 206:
            offset = 0  # a full body: start the file over
        announced = _announced_length(response)
        total = None if announced is None else offset + announced
        if total is not None and total > options.max_bytes:
            raise options.fail(_too_big(total, options))
        if "text/html" in response.headers.get("Content-Type", "").lower():
            raise options.fail(_HTML_MESSAGE)
        received = _stream(response, partial, offset, total, options)
    if total is not None and received < total:
        raise _Transient(f"truncated download: received {received} of {total} bytes")


def _stream(response, partial: Path, offset: int, total: int | None, options: _Options) -> int:
    """Append the response body to *partial* (truncating it first when *offset* is 0); bytes now on disk."""
    import requests
    from tqdm import tqdm

    partial.parent.mkdir(parents=True, exist_ok=True)
    received = offset
    rate = _RateFloor(options, received)
    with open(partial, "ab" if offset else "wb") as out, \
            tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=options.label, file=sys.stderr,
                 disable=not options.progress, leave=False) as bar:
        try:
            for chunk in _chunks(response, options):
                if received == 0 and _looks_like_html(chunk):
                    raise options.fail(_HTML_MESSAGE)
                received += len(chunk)
                if received > options.max_bytes:
                    raise options.fail(_too_big(received, options))
                out.write(chunk)
                bar.update(len(chunk))
                options.check_deadline(received)
                rate.check(received)
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                TimeoutError) as error:
            out.flush()
            options.check_deadline(received)
            raise _Transient(f"connection broke after {received} bytes ({type(error).__name__})") from None
    return received


def _chunks(response, options: _Options) -> Iterator[bytes]:
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


class _RateFloor:
    """Refuses a body that arrives slower than ``min_bytes_per_s`` over a whole window."""

    def __init__(self, options: _Options, received: int) -> None:
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


def _download_gdrive(partial: Path, options: _Options) -> None:
    """Google Drive through gdown (virus-scan confirmation page included); the size cap is a progress hook."""
    import gdown
    import requests
    from gdown.exceptions import DownloadCancelled, DownloadError, FileURLRetrievalError

    file_id = options.url[len("gdrive://"):]
    if not _GDRIVE_ID.fullmatch(file_id):
        raise options.fail(f"{file_id!r} is not a Google Drive file id (letters, digits, - and _)")
    source = os.environ.get(GDRIVE_URL_ENV, GDRIVE_URL_DEFAULT).format(id=file_id)

    rate: list[_RateFloor] = []

    def cap(done: int, total: int | None) -> None:
        if done > options.max_bytes or (total or 0) > options.max_bytes:
            raise options.fail(_too_big(max(done, total or 0), options))
        options.check_deadline(done)
        if not rate:
            rate.append(_RateFloor(options, done))
        rate[0].check(done)

    partial.parent.mkdir(parents=True, exist_ok=True)
    options.check_deadline(0)
    cancel = threading.Event()  # gdown interrupts its reads when this is set: at the deadline
    timer = threading.Timer(max(0.0, options.ends_at - time.monotonic()), cancel.set)
    timer.daemon = True
    timer.start()
    try:  # gdown writes <partial><random>.part and renames it to <partial>; resume=True picks the .part up
        gdown.download(url=source, output=str(partial), quiet=not options.progress, resume=True,
                       use_cookies=False, timeout=options.read_timeout(), retries=0, progress=cap, cancel=cancel)
    except DownloadCancelled:
        raise options.fail(_deadline_message(_size_so_far(partial), options.limits)) from None
    except FileURLRetrievalError as error:
        raise options.fail(f"Google Drive did not hand out the file (is it shared with 'Anyone with the link'? "
                           f"quota exceeded?): {' '.join(str(error).split())}") from None
    except requests.HTTPError as error:
        status = error.response.status_code if error.response is not None else 0
        if status == 429 or status >= 500:
            raise _Transient(f"HTTP {status}") from None
        raise options.fail(f"HTTP {status}: the file is not available on Google Drive") from None
    except (requests.ConnectionError, requests.Timeout, DownloadError) as error:
        raise _Transient(f"{type(error).__name__}: {error}") from None
    finally:
        timer.cancel()


def _size_so_far(partial: Path) -> int:
    """Bytes in *partial* and the ``.part`` files gdown keeps next to it."""
    return sum(path.stat().st_size for path in partial.parent.glob(f"{partial.name}*") if path.is_file())


def _download_hf(partial: Path, options: _Options) -> None:
    """A Hugging Face Hub file: its ``/resolve/`` URL at ``$HF_ENDPOINT`` (default the public Hub)."""
    from huggingface_hub import constants, hf_hub_url

    repo_id, filename, revision = parse_hf_url(options.url)
    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    _download_http(partial, options, hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint))


def parse_hf_url(url: str) -> tuple[str, str, str | None]:
    """``hf://owner/repo/path/in/repo[@revision]`` -> (``owner/repo``, ``path/in/repo``, revision or None)."""
    rest, revision = url[len("hf://"):], None
    if "@" in rest:
        rest, revision = rest.rsplit("@", 1)
    parts = rest.split("/", 2)
    if not url.startswith("hf://") or len(parts) != 3 or not all(parts) or revision == "":
        raise ValueError(f"{url!r} is not of the form hf://owner/repo/path/to/file[@revision]")
    return f"{parts[0]}/{parts[1]}", parts[2], revision


def _download_file(partial: Path, options: _Options) -> None:
    """A local file (``file:///abs/path``), copied with the same size cap."""
    source = Path(urllib.request.url2pathname(urllib.parse.urlsplit(options.url).path))
    if not source.is_file():
        raise options.fail(f"no such file: {source}")
    if source.stat().st_size > options.max_bytes:
        raise options.fail(_too_big(source.stat().st_size, options))
    partial.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "rb") as handle, open(partial, "wb") as out:
        while block := handle.read(CHUNK_BYTES):
            out.write(block)


# ----------------------------------------------------------------------------------------------- helpers

_HTML_MESSAGE = ("the server sent an HTML page instead of the checkpoint (for Google Drive: the file is not "
                 "shared with 'Anyone with the link', or its download quota is exceeded)")


def _looks_like_html(head: bytes) -> bool:
    """Checkpoints start with a zip, pickle or safetensors header, never with ``<``; web pages do."""
    return head[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<")


def _refuse_html_file(path: Path, options: _Options) -> None:
    with open(path, "rb") as handle:
        if _looks_like_html(handle.read(1024)):
            raise options.fail(_HTML_MESSAGE)


def _deadline_message(received: int, limits: DownloadLimits) -> str:
    return (f"the download did not finish within its deadline of {limits.deadline_s:g} s ({DEADLINE_ENV}); "
            f"{received:,} bytes received. Try again later or host the file elsewhere")


def _too_big(size: int, options: _Options) -> str:
    return (f"the file is larger than the size cap ({size} > {options.max_bytes} bytes); "
            f"raise the cap only for a checkpoint you trust to be this large")


def _expected_sha256(sha256: str | None, options: _Options) -> str | None:
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


def _with_retries(action: Callable[[], None], retries: int, backoff: Callable[[int], float],
                  options: _Options) -> None:
    for attempt in range(retries + 1):
        try:
            return action()
        except _Transient as error:
            if attempt == retries:
                raise options.fail(f"download failed after {retries + 1} attempts: {error}") from None
            delay = backoff(attempt)
            if time.monotonic() + delay >= options.ends_at:
                raise options.fail(f"{error}; the deadline of {options.limits.deadline_s:g} s ({DEADLINE_ENV}) "
                                   "leaves no time for a retry") from None
            print(f"{options.label}: {error}; retrying in {delay:.0f} s ({attempt + 1}/{retries})", file=sys.stderr)
            time.sleep(delay)


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
