"""Checkpoint fetching against a local HTTP server on 127.0.0.1 with injected faults."""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from evaluator.errors import APBError
from evaluator.checkpoint.download import DownloadLimits, default_backoff
from evaluator.checkpoint.fetch import fetch_checkpoint
from evaluator.registry import url_schemes
from tests.support.http_server import LocalServer

LABEL = "Demo_Doe2024Demo_R18_CIFAR10_US_90"
DATA = os.urandom(3 * (1 << 20) + 12345)  # a bit over 3 MiB: several 1 MiB chunks
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def server():
    with LocalServer() as running:
        yield running


class Waits:
    """An injected backoff that records the waits instead of sleeping them."""

    def __init__(self) -> None:
        self.attempts: list[int] = []

    def __call__(self, attempt: int) -> float:
        self.attempts.append(attempt)
        return 0.0


def fetch(url: str, sha256: str | None, cache: Path, **options) -> Path:
    options = {"progress": False, "backoff": Waits(), "label": LABEL, **options}
    return fetch_checkpoint(url, sha256, cache_dir=cache, **options)


def leftovers(cache: Path) -> list[str]:
    """Files in the store and the partial folder (locks are empty files and may stay)."""
    return sorted(str(path.relative_to(cache)) for folder in ("sha256", "partial") if (cache / folder).is_dir()
                  for path in (cache / folder).rglob("*") if path.is_file())


def test_pinned_download_lands_in_the_content_addressed_cache_and_is_reused(server, tmp_path):
    url = server.add("/ckpt.pt", DATA)
    path = fetch(url, SHA, tmp_path)
    assert path == tmp_path / "sha256" / SHA and path.read_bytes() == DATA
    assert fetch(url, SHA, tmp_path) == path
    assert len(server.requests_to("/ckpt.pt")) == 1  # the second call is served from the cache
    assert leftovers(tmp_path) == [f"sha256/{SHA}"]


def test_unpinned_download_is_hashed_and_stored_under_its_digest(server, tmp_path):
    assert fetch(server.add("/ckpt.pt", DATA), None, tmp_path) == tmp_path / "sha256" / SHA


def test_a_corrupted_cache_file_is_fetched_again(server, tmp_path):
    url = server.add("/ckpt.pt", DATA)
    path = fetch(url, SHA, tmp_path)
    path.write_bytes(b"bit rot")
    assert fetch(url, SHA, tmp_path).read_bytes() == DATA
    assert len(server.requests_to("/ckpt.pt")) == 2


def test_server_errors_are_retried_with_backoff(server, tmp_path):
    url = server.add("/ckpt.pt", DATA, fail_times=2)
    waits = Waits()
    assert fetch(url, SHA, tmp_path, backoff=waits).read_bytes() == DATA
    assert waits.attempts == [0, 1] and len(server.requests_to("/ckpt.pt")) == 3


def test_persistent_server_error_fails_clearly_and_leaves_nothing(server, tmp_path):
    url = server.add("/ckpt.pt", DATA, fail_times=100)
    waits = Waits()
    with pytest.raises(APBError) as error:
        fetch(url, SHA, tmp_path, retries=3, backoff=waits)
    message = str(error.value)
    assert LABEL in message and "after 4 attempts" in message and "HTTP 500" in message and url in message
    assert waits.attempts == [0, 1, 2] and leftovers(tmp_path) == []


def test_client_errors_are_not_retried(server, tmp_path):
    url = server.add("/gone.pt", DATA, status=404)
    with pytest.raises(APBError, match="HTTP 404"):
        fetch(url, SHA, tmp_path)
    assert len(server.requests_to("/gone.pt")) == 1 and leftovers(tmp_path) == []


def test_timeout_is_retried_then_succeeds(server, tmp_path):
    url = server.add("/slow.pt", DATA, delay_times=1, delay=2.0)
    assert fetch(url, SHA, tmp_path, timeout=0.3).read_bytes() == DATA


def test_persistent_timeout_fails_clearly_and_leaves_nothing(server, tmp_path):
    url = server.add("/slow.pt", DATA, delay_times=100, delay=2.0)
    with pytest.raises(APBError) as error:
        fetch(url, SHA, tmp_path, timeout=0.2, retries=1)
    assert LABEL in str(error.value) and "timed out" in str(error.value) and leftovers(tmp_path) == []


def test_truncated_download_resumes_with_range(server, tmp_path):
    url = server.add("/ckpt.pt", DATA, truncate_times=2)
    assert fetch(url, SHA, tmp_path).read_bytes() == DATA
    ranges = [request.headers.get("Range") for request in server.requests_to("/ckpt.pt")]
    assert ranges[0] is None and all(value and value.startswith("bytes=") for value in ranges[1:])
    assert leftovers(tmp_path) == [f"sha256/{SHA}"]


def test_truncated_download_restarts_when_the_server_ignores_range(server, tmp_path):
    url = server.add("/ckpt.pt", DATA, truncate_times=1, ranges=False)
    assert fetch(url, SHA, tmp_path).read_bytes() == DATA


def test_always_truncated_download_fails_and_leaves_nothing(server, tmp_path):
    url = server.add("/ckpt.pt", DATA, truncate_times=100)
    with pytest.raises(APBError) as error:
        fetch(url, SHA, tmp_path, retries=2)
    assert LABEL in str(error.value) and "after 3 attempts" in str(error.value)
    assert leftovers(tmp_path) == []


def test_interrupted_download_keeps_its_partial_and_the_next_run_resumes(server, tmp_path):
    url = server.add("/ckpt.pt", DATA, truncate_times=1)

    def interrupt(attempt: int) -> float:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fetch(url, SHA, tmp_path, backoff=interrupt)
    [partial] = leftovers(tmp_path)
    kept = (tmp_path / partial).stat().st_size
    assert partial.startswith("partial/") and 0 < kept < len(DATA)
    assert fetch(url, SHA, tmp_path).read_bytes() == DATA
    assert server.requests_to("/ckpt.pt")[-1].headers["Range"] == f"bytes={kept}-"
    assert leftovers(tmp_path) == [f"sha256/{SHA}"]


@pytest.mark.parametrize("fault", ["html", "html_as_binary"])
def test_html_page_instead_of_the_checkpoint_is_reported_as_such(server, tmp_path, fault):
    url = server.add("/ckpt.pt", DATA, **{fault: True})
    with pytest.raises(APBError) as error:
        fetch(url, SHA, tmp_path)
    assert "HTML page instead of the checkpoint" in str(error.value) and LABEL in str(error.value)
    assert len(server.requests_to("/ckpt.pt")) == 1 and leftovers(tmp_path) == []


def test_file_over_the_size_cap_is_refused_from_its_announced_length(server, tmp_path):
    url = server.add("/big.pt", DATA)
    with pytest.raises(APBError, match=rf"larger than the size cap \({len(DATA)} > 1000 bytes\)"):
        fetch(url, None, tmp_path, max_bytes=1000)
    assert leftovers(tmp_path) == []


def test_size_cap_is_enforced_while_streaming_a_body_of_unknown_length(server, tmp_path):
    url = server.add("/big.pt", DATA, omit_length=True)
    with pytest.raises(APBError) as error:
        fetch(url, None, tmp_path, max_bytes=1000)
    received = int(str(error.value).split("size cap (")[1].split(" >")[0])
    assert received < len(DATA)  # stopped at the first chunk over the cap, not after the whole body
    assert leftovers(tmp_path) == []


def test_sha256_mismatch_names_both_digests_and_leaves_nothing(server, tmp_path):
    url = server.add("/ckpt.pt", DATA)
    wrong = "0" * 64
    with pytest.raises(APBError) as error:
        fetch(url, wrong, tmp_path)
    message = str(error.value)
    assert LABEL in message and "sha256 mismatch" in message and wrong in message and SHA in message
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("url, expected", [
    ("http://example.org/ckpt.pt", "plain http:// is refused"),
    ("ftp://example.org/ckpt.pt", "unsupported URL scheme"),
    ("gdrive://not/an/id", "write a Google Drive file as gdrive://<file id>"),
])
def test_unsupported_urls_are_refused(tmp_path, url, expected):
    with pytest.raises(APBError, match=expected):
        fetch(url, None, tmp_path)


def test_malformed_sha256_pin_is_refused(tmp_path):
    with pytest.raises(APBError, match="64 lowercase hex"):
        fetch("https://example.org/x.pt", "ABC", tmp_path)


def test_gdrive_goes_through_gdown_to_the_configured_base_url(server, tmp_path, monkeypatch):
    monkeypatch.setenv("APB_GDRIVE_URL", server.url("/uc?id={id}"))
    server.add("/uc?id=1uHEhTIZdE4b-zRY8_HW", DATA)
    assert fetch("gdrive://1uHEhTIZdE4b-zRY8_HW", SHA, tmp_path).read_bytes() == DATA
    assert "Mozilla" in server.requests_to("/uc?id=1uHEhTIZdE4b-zRY8_HW")[0].headers["User-Agent"]  # gdown's


def test_gdrive_html_page_and_size_cap(server, tmp_path, monkeypatch):
    monkeypatch.setenv("APB_GDRIVE_URL", server.url("/uc?id={id}"))
    server.add("/uc?id=page-file-id", DATA, html=True)
    with pytest.raises(APBError, match="HTML page"):
        fetch("gdrive://page-file-id", None, tmp_path)
    server.add("/uc?id=big-file-id", DATA)
    with pytest.raises(APBError, match="size cap"):
        fetch("gdrive://big-file-id", None, tmp_path, max_bytes=1000)
    assert leftovers(tmp_path) == []


def test_gdrive_server_errors_are_retried(server, tmp_path, monkeypatch):
    monkeypatch.setenv("APB_GDRIVE_URL", server.url("/uc?id={id}"))
    server.add("/uc?id=flaky-file-id", DATA, fail_times=1, fail_status=503)
    assert fetch("gdrive://flaky-file-id", SHA, tmp_path).read_bytes() == DATA


def test_hugging_face_resolve_endpoint_with_revision(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", server.base_url)
    url = server.add_hf_file("someone/pruned-models", "r18/cifar10_90.safetensors", DATA, revision="v1.0")
    assert url == "hf://someone/pruned-models/r18/cifar10_90.safetensors@v1.0"
    assert fetch(url, SHA, tmp_path).read_bytes() == DATA
    assert server.log[-1].path == "/someone/pruned-models/resolve/v1.0/r18/cifar10_90.safetensors"


def test_the_fetcher_reads_hf_urls_with_the_registry_syntax():
    assert url_schemes.parse("hf://o/r/a/b.pt")[1] == {"repo": "o/r", "path": "a/b.pt", "rev": None}
    assert url_schemes.parse("hf://o/r/b.pt@refs/pr/1")[1] == {"repo": "o/r", "path": "b.pt", "rev": "refs/pr/1"}
    with pytest.raises(ValueError, match="hf://<owner>/<repo>/<path in repo>"):
        url_schemes.parse("hf://o/b.pt")


def test_file_urls_are_copied_with_the_same_checks(tmp_path):
    source = tmp_path / "local.pt"
    source.write_bytes(DATA)
    cache = tmp_path / "cache"
    assert fetch(source.as_uri(), SHA, cache).read_bytes() == DATA
    with pytest.raises(APBError, match="no such file"):
        fetch((tmp_path / "missing.pt").as_uri(), None, cache)
    with pytest.raises(APBError, match="size cap"):
        fetch(source.as_uri(), None, tmp_path / "other", max_bytes=10)


def test_default_backoff_grows_and_is_capped():
    assert [default_backoff(attempt) for attempt in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_a_trickling_server_is_abandoned_by_the_throughput_floor(server, tmp_path):
    url = server.add("/trickle.pt", DATA[:400], trickle=0.02)  # 50 bytes/s: 8 s for the whole body
    started = time.monotonic()
    with pytest.raises(APBError) as error:
        fetch(url, None, tmp_path, retries=0, limits=DownloadLimits(deadline_s=60, min_bytes_per_s=1000,
                                                                   window_s=0.5))
    assert time.monotonic() - started < 3
    assert "too slow" in str(error.value) and "APB_DOWNLOAD_MIN_BYTES_PER_S" in str(error.value)
    assert LABEL in str(error.value) and leftovers(tmp_path) == []


def test_the_deadline_from_the_environment_ends_a_download_retries_included(server, tmp_path, monkeypatch):
    monkeypatch.setenv("APB_DOWNLOAD_DEADLINE_S", "1.5")
    monkeypatch.setenv("APB_DOWNLOAD_MIN_BYTES_PER_S", "1")  # a trickle above the floor: only the deadline ends it
    url = server.add("/trickle.pt", DATA[:400], trickle=0.02, truncate_times=0)
    started = time.monotonic()
    with pytest.raises(APBError) as error:
        fetch(url, None, tmp_path, retries=5)
    assert time.monotonic() - started < 4
    assert "deadline of 1.5 s (APB_DOWNLOAD_DEADLINE_S)" in str(error.value) and leftovers(tmp_path) == []


def test_the_deadline_also_ends_a_google_drive_download(server, tmp_path, monkeypatch):
    monkeypatch.setenv("APB_GDRIVE_URL", server.url("/uc?id={id}"))
    server.add("/uc?id=slow-file-id", DATA[:400], trickle=0.02)
    started = time.monotonic()
    with pytest.raises(APBError, match="deadline"):
        fetch("gdrive://slow-file-id", None, tmp_path, limits=DownloadLimits(deadline_s=1.0, min_bytes_per_s=1,
                                                                     window_s=100))
    assert time.monotonic() - started < 4 and leftovers(tmp_path) == []


@pytest.mark.parametrize("value", ["0", "-3", "soon", "nan", "inf"])
def test_download_limits_from_the_environment_must_be_positive_numbers(monkeypatch, value):
    monkeypatch.setenv("APB_DOWNLOAD_WINDOW_S", value)
    with pytest.raises(APBError, match="APB_DOWNLOAD_WINDOW_S.*not a positive number"):
        DownloadLimits.from_env()
