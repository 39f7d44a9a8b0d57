"""Where a checkpoint download may connect: https on port 443 to a public DNS name whose every address is global.

A manifest names the URL, so a hostile one could point the runner at its own network (``http://10.0.0.1``, the
cloud metadata service at ``169.254.169.254``, ``localhost``), directly or through a redirect. The rule is
enforced where sockets are opened, for every connection a download makes (the URL itself and every redirect
hop, whichever library follows it: requests for https and hf, gdown for Google Drive):

* the host is a DNS name (no IP literal in any spelling: dotted, decimal ``2130706433``, octal, hex, IPv6),
  not a local or internal name (``localhost``, ``*.local``, ``*.internal`` such as ``metadata.google.internal``);
* the scheme is https and the port 443;
* the name is resolved once, every address it resolves to must be global (not private, loopback, link-local,
  shared, reserved, multicast, unique-local ``fc00::/7``), and the socket connects to one of exactly those
  checked addresses (no second lookup that a rebinding DNS server could answer differently). TLS still
  verifies the certificate against the name.

A refused connection raises :class:`RefusedDestination`, which says why in terms of the rule only: nothing
of the response that redirected there (status, headers, body) is part of it.

Tests serve files from 127.0.0.1: :data:`LOOPBACK_ENV` set to ``1`` in the environment (the test server
fixture sets it; no manifest field can) additionally allows http or https to a loopback address on any port,
and nothing else.
"""
from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import socket
import threading
from typing import Any, Callable, Iterator, Sequence

LOOPBACK_ENV = "APB_TEST_ALLOW_LOOPBACK"  # "1": tests only; never read from a manifest
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain", ".lan", ".home.arpa", ".arpa", ".intranet",
                   ".corp", ".home")
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "metadata", "metadata.google.internal")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")

Resolver = Callable[..., Sequence[tuple[Any, ...]]]


class RefusedDestination(Exception):
    """A connection the egress rule refuses. Not an ``OSError``: no HTTP library retries or wraps it."""


def loopback_allowed() -> bool:
    """True where the test-only allowance :data:`LOOPBACK_ENV` is set."""
    return os.environ.get(LOOPBACK_ENV) == "1"


def check_url_host(host: str | None, port: int | None, *, tls: bool, loopback: bool | None = None) -> None:
    """Refuse (:class:`RefusedDestination`) a destination that breaks the rule before anything is resolved."""
    loopback = loopback_allowed() if loopback is None else loopback
    name = (host or "").lower().rstrip(".")
    if loopback and name in _LOOPBACK_NAMES:
        return
    if not tls:
        raise RefusedDestination("plain http:// is refused; use https://")
    if port not in (None, 443):
        raise RefusedDestination(f"port {port} is refused; downloads use https on port 443")
    if not name:
        raise RefusedDestination("the URL has no host name")
    if _is_ip_literal(name):
        raise RefusedDestination("an IP address instead of a host name is refused; use the file's public DNS name")
    labels = name.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels) or labels[-1].isdigit():
        raise RefusedDestination("the host is not a public DNS name")
    if name in _LOCAL_NAMES or name.endswith(_LOCAL_SUFFIXES):
        raise RefusedDestination("the host is a local or internal name, not a public one")


def checked_address(host: str, port: int, *, tls: bool, resolve: Resolver | None = None,
                    loopback: bool | None = None) -> str:
    """The address to connect to for *host*: the first of its resolved addresses, all of which are checked."""
    loopback = loopback_allowed() if loopback is None else loopback
    check_url_host(host, port, tls=tls, loopback=loopback)
    resolve = resolve or socket.getaddrinfo
    try:
        infos = resolve(host, port, 0, socket.SOCK_STREAM)
    except OSError as error:
        raise RefusedDestination(f"the host name does not resolve ({error.__class__.__name__})") from None
    addresses = [str(info[4][0]).split("%", 1)[0] for info in infos]
    if not addresses:
        raise RefusedDestination("the host name resolves to no address")
    for address in addresses:
        if not _allowed_address(address, loopback and host.lower().rstrip(".") in _LOOPBACK_NAMES):
            raise RefusedDestination("the host name resolves to a non-public address (private, loopback, "
                                     "link-local or reserved)")
    return addresses[0]


def _allowed_address(text: str, loopback: bool) -> bool:
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if loopback:
        return address.is_loopback
    return address.is_global and not address.is_multicast


def _is_ip_literal(name: str) -> bool:
    """True for any spelling of an IP address that a resolver or ``inet_aton`` would accept as one."""
    if ":" in name or name.startswith("["):
        return True
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    try:
        socket.inet_aton(name)  # accepts 2130706433, 0x7f.1, 0177.0.0.1, 127.1
        return True
    except OSError:
        return False


# ----------------------------------------------------------------------------------- enforcement in urllib3

_INSTALL = threading.RLock()


def _guarded(base: Any) -> Any:
    tls = base.__name__ == "HTTPSConnection"

    class Guarded(base):
        def _new_conn(self) -> socket.socket:
            original: str = getattr(self, "_dns_host")
            setattr(self, "_dns_host", checked_address(self.host, self.port, tls=tls))
            try:
                return super()._new_conn()
            finally:
                setattr(self, "_dns_host", original)

    Guarded.__name__ = f"Guarded{base.__name__}"
    return Guarded


@contextlib.contextmanager
def guarded_connections() -> Iterator[None]:
    """Within this block every connection urllib3 opens (requests, gdown) follows the egress rule. A proxy from
    the environment is checked like any destination (a private proxy is refused)."""
    from urllib3 import connection, connectionpool

    with _INSTALL:
        pools: tuple[Any, ...] = (connectionpool.HTTPConnectionPool, connectionpool.HTTPSConnectionPool)
        saved = [pool.ConnectionCls for pool in pools]
        connectionpool.HTTPConnectionPool.ConnectionCls = _guarded(connection.HTTPConnection)
        connectionpool.HTTPSConnectionPool.ConnectionCls = _guarded(connection.HTTPSConnection)
        try:
            yield
        finally:
            for pool, cls in zip(pools, saved):
                pool.ConnectionCls = cls
