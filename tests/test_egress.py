"""The download egress rule (evaluator/untrusted/egress.py): public https hosts only, for the URL and every redirect hop."""
from __future__ import annotations

import hashlib
import socket
import time

import pytest

from evaluator.untrusted import egress
from evaluator.errors import APBError
from evaluator.checkpoint.fetch import fetch_checkpoint
from tests.support.http_server import LocalServer

DATA = b"PK\x03\x04" + bytes(range(256)) * 40
SHA = hashlib.sha256(DATA).hexdigest()
NAMES = {  # what the stub resolver answers
    "internal.example.org": ["10.0.0.1"],
    "loop.example.org": ["127.0.0.1"],
    "metadata.example.org": ["169.254.169.254"],
    "six.example.org": ["::1"],
    "ula.example.org": ["fd00::1"],
    "mapped.example.org": ["::ffff:10.0.0.1"],
    "shared.example.org": ["100.64.0.1"],
    "mixed.example.org": ["93.184.215.14", "192.168.1.10"],
    "public.example.org": ["93.184.215.14"],
    "public6.example.org": ["2606:4700:4700::1111"],
}


def stub_resolver(host, port, family=0, kind=0, *rest):
    if host not in NAMES:
        raise socket.gaierror(socket.EAI_NONAME, "unknown")
    return [(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))
            for address in NAMES[host]]


@pytest.fixture
def resolver(monkeypatch):
    """Every lookup, the guarded connections' included, answered by the stub (loopback names by the system)."""
    real = socket.getaddrinfo

    def lookup(host, *args, **kwargs):
        return stub_resolver(host, *args, **kwargs) if str(host).endswith(".example.org") else real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", lookup)


def fetch(url: str, cache, **options):
    options = {"progress": False, "backoff": lambda attempt: 0.0, "label": "M", "retries": 0, "timeout": 2,
               **options}
    return fetch_checkpoint(url, None, cache_dir=cache, **options)


@pytest.mark.parametrize("host", ["internal", "loop", "metadata", "six", "ula", "mapped", "shared", "mixed"])
def test_names_resolving_to_non_public_addresses_are_refused(host):
    with pytest.raises(egress.RefusedDestination, match="non-public address"):
        egress.checked_address(f"{host}.example.org", 443, tls=True, resolve=stub_resolver, loopback=False)


def test_public_names_resolve_to_a_checked_address():
    assert egress.checked_address("public.example.org", 443, tls=True, resolve=stub_resolver,
                                  loopback=False) == "93.184.215.14"
    assert egress.checked_address("public6.example.org", 443, tls=True, resolve=stub_resolver,
                                  loopback=False) == "2606:4700:4700::1111"


@pytest.mark.parametrize("url, reason", [
    ("https://127.0.0.1/x.pt", "IP address"),
    ("https://2130706433/x.pt", "IP address"),  # 127.0.0.1 as one decimal number
    ("https://0x7f000001/x.pt", "IP address"),
    ("https://0177.0.0.1/x.pt", "IP address"),
    ("https://127.1/x.pt", "IP address"),
    ("https://169.254.169.254/latest/meta-data/", "IP address"),
    ("https://[::1]/x.pt", "IP address"),
    ("https://[fd00::1]/x.pt", "IP address"),
    ("https://[::ffff:169.254.169.254]/x.pt", "IP address"),
    ("https://localhost/x.pt", "not a public DNS name"),
    ("https://metadata.google.internal/computeMetadata/v1/", "local or internal name"),
    ("https://printer.local/x.pt", "local or internal name"),
    ("https://public.example.org:8443/x.pt", "port 8443"),
    ("http://public.example.org/x.pt", "plain http"),
    ("http://127.0.0.1:9/x.pt", "plain http"),  # loopback without the tests' allowance
    ("https://internal.example.org/x.pt", "non-public address"),
    ("https://metadata.example.org/x.pt", "non-public address"),
])
def test_the_url_itself_is_refused_without_connecting(resolver, tmp_path, monkeypatch, url, reason):
    monkeypatch.delenv(egress.LOOPBACK_ENV, raising=False)
    started = time.monotonic()
    with pytest.raises(APBError, match="refused") as error:
        fetch(url, tmp_path)
    assert reason in str(error.value) and time.monotonic() - started < 1.5  # no connection attempt timed out
    assert not (tmp_path / "sha256").exists()


def test_every_redirect_hop_is_checked_and_a_refused_hop_shows_nothing_of_the_response(resolver, tmp_path,
                                                                                       capsys):
    with LocalServer() as server:
        server.add("/hop", b"", redirect="https://internal.example.org/ckpt.pt")
        url = server.add("/start", b"", redirect=server.url("/hop"))
        with pytest.raises(APBError) as error:
            fetch(url, tmp_path)
        assert len(server.requests_to("/hop")) == 1  # the loopback hop (tests' allowance) was followed
    message = str(error.value)
    assert "refused" in message and "non-public address" in message and "redirects" in message
    printed = capsys.readouterr()
    assert all("SECRET" not in text for text in (message, printed.out, printed.err))
    assert "internal.example.org" not in message  # not even the Location header of the refused hop


@pytest.mark.parametrize("target", ["http://169.254.169.254/latest/meta-data/", "https://10.0.0.1/x",
                                    "https://metadata.example.org/x", "http://[::ffff:127.0.0.2]:1/x"])
def test_the_loopback_allowance_allows_loopback_only(resolver, tmp_path, target):
    with LocalServer() as server:
        url = server.add("/start", b"", redirect=target)
        with pytest.raises(APBError, match="refused"):
            fetch(url, tmp_path)


def test_the_loopback_allowance_comes_only_from_the_environment(tmp_path, monkeypatch):
    with LocalServer() as server:
        url = server.add("/ckpt.pt", DATA)
        assert fetch(url, tmp_path).read_bytes() == DATA  # the fixture's allowance
        for value in (None, "true", "0", "yes"):  # unset, or anything but "1": no allowance
            if value is None:
                monkeypatch.delenv(egress.LOOPBACK_ENV)
            else:
                monkeypatch.setenv(egress.LOOPBACK_ENV, value)
            with pytest.raises(APBError, match="plain http:// is refused"):
                fetch(url, tmp_path / "other")
        assert len(server.requests_to("/ckpt.pt")) == 1


def test_google_drive_downloads_follow_the_same_rule(resolver, tmp_path, monkeypatch):
    """gdown opens its own connections: they are guarded too (a redirect from Drive to a private host)."""
    with LocalServer() as server:
        monkeypatch.setenv("APB_GDRIVE_URL", server.url("/uc?id={id}"))
        server.add("/uc?id=abc-file-id", b"", redirect="https://internal.example.org/file")
        with pytest.raises(APBError, match="non-public address"):
            fetch("gdrive://abc-file-id", tmp_path)


@pytest.mark.parametrize("url", ["https://10.0.0.1/x.pt", "https://169.254.169.254/x.pt", "https://2130706433/x.pt",
                                 "https://metadata.google.internal/x.pt", "https://files.example.org:8443/x.pt"])
def test_apb_validate_refuses_a_manifest_url_the_runner_would_refuse(url):
    from evaluator.repository.manifest import url_problem

    problem = url_problem(url, allow_file_urls=False) or ""
    assert "public https hosts" in problem or "no valid host name" in problem
    assert url_problem("https://zenodo.org/records/1/files/x.pt", allow_file_urls=False) is None


def test_the_socket_connects_to_the_checked_address_and_tls_still_names_the_host(resolver, monkeypatch):
    """No second lookup (DNS rebinding): urllib3 is handed the address that was checked, not the name."""
    from urllib3 import connectionpool
    from urllib3.util import connection

    seen = []

    def create_connection(address, *args, **kwargs):
        seen.append(address)
        raise OSError("no network in tests")

    monkeypatch.setattr(connection, "create_connection", create_connection)
    with egress.guarded_connections():
        conn = connectionpool.HTTPSConnectionPool.ConnectionCls("public.example.org", 443)
        with pytest.raises(Exception, match="no network in tests"):
            conn.connect()
        assert conn.host == "public.example.org"  # what TLS verifies the certificate against
        refused = connectionpool.HTTPSConnectionPool.ConnectionCls("internal.example.org", 443)
        with pytest.raises(egress.RefusedDestination):
            refused.connect()
    assert seen == [("93.184.215.14", 443)]
    assert connectionpool.HTTPSConnectionPool.ConnectionCls.__name__ == "HTTPSConnection"  # restored
