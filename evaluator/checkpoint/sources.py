"""The downloaders of the checkpoint URL schemes, one function per scheme, each named by its entry in
``evaluator/registry/url_schemes.yaml`` and called as ``(partial file, options, the URL's fields)``.

``https://`` (and the tests' loopback ``http://``) is streamed as it is; ``gdrive://<id>`` goes through gdown,
which follows Drive's virus-scan confirmation page; ``hf://owner/repo/path[@revision]`` is the Hub's
``/resolve/`` URL, built by ``huggingface_hub.hf_hub_url`` and streamed here so the size cap and resume apply;
``file://`` is copied with the same size cap. The fetcher has checked the URL's form and the egress rule.
"""
from __future__ import annotations

import os
import threading
import time
import urllib.request
from pathlib import Path

from evaluator.checkpoint.download import (CHUNK_BYTES, DownloadOptions, RateFloor, Transient, deadline_message,
                                           stream_url, too_big)

Fields = dict[str, str | None]
GDRIVE_URL_ENV = "APB_GDRIVE_URL"  # a URL template with {id}; tests point it at a local server
GDRIVE_URL_DEFAULT = "https://drive.google.com/uc?id={id}"


def download_url(partial: Path, options: DownloadOptions, fields: Fields) -> None:
    """A URL the download connects to itself (https, or http to the tests' loopback server)."""
    stream_url(partial, options, options.url)


def download_gdrive(partial: Path, options: DownloadOptions, fields: Fields) -> None:
    """Google Drive through gdown (virus-scan confirmation page included); the size cap is a progress hook."""
    import gdown
    import requests
    from gdown.exceptions import DownloadCancelled, DownloadError, FileURLRetrievalError

    source = os.environ.get(GDRIVE_URL_ENV, GDRIVE_URL_DEFAULT).format(id=fields["id"])
    rate: list[RateFloor] = []

    def cap(done: int, total: int | None) -> None:
        if done > options.max_bytes or (total or 0) > options.max_bytes:
            raise options.fail(too_big(max(done, total or 0), options))
        options.check_deadline(done)
        if not rate:
            rate.append(RateFloor(options, done))
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
        raise options.fail(deadline_message(_size_so_far(partial), options.limits)) from None
    except FileURLRetrievalError as error:
        raise options.fail(f"Google Drive did not hand out the file (is it shared with 'Anyone with the link'? "
                           f"quota exceeded?): {' '.join(str(error).split())}") from None
    except requests.HTTPError as error:
        status = error.response.status_code if error.response is not None else 0
        if status == 429 or status >= 500:
            raise Transient(f"HTTP {status}") from None
        raise options.fail(f"HTTP {status}: the file is not available on Google Drive") from None
    except (requests.ConnectionError, requests.Timeout, DownloadError) as error:
        raise Transient(f"{type(error).__name__}: {error}") from None
    finally:
        timer.cancel()


def _size_so_far(partial: Path) -> int:
    """Bytes in *partial* and the ``.part`` files gdown keeps next to it."""
    return sum(path.stat().st_size for path in partial.parent.glob(f"{partial.name}*") if path.is_file())


def download_hf(partial: Path, options: DownloadOptions, fields: Fields) -> None:
    """A Hugging Face Hub file: its ``/resolve/`` URL at ``$HF_ENDPOINT`` (default the public Hub)."""
    from huggingface_hub import constants, hf_hub_url

    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    stream_url(partial, options, hf_hub_url(str(fields["repo"]), str(fields["path"]), revision=fields["rev"],
                                            endpoint=endpoint))


def download_file(partial: Path, options: DownloadOptions, fields: Fields) -> None:
    """A local file (``file:///abs/path``), copied with the same size cap."""
    source = Path(urllib.request.url2pathname(str(fields["path"])))
    if not source.is_file():
        raise options.fail(f"no such file: {source}")
    if source.stat().st_size > options.max_bytes:
        raise options.fail(too_big(source.stat().st_size, options))
    partial.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "rb") as handle, open(partial, "wb") as out:
        while block := handle.read(CHUNK_BYTES):
            out.write(block)
