"""Refuse connections to non-public addresses, at connect time, for code run inside `guarded()`.

Checking a URL's text is the wrong depth for this: the host a library connects to can differ
from the one a parser sees (`http://127.0.0.1:8761\\@8.8.8.8/`), redirects and yt-dlp's inner
media URLs are further connections, and DNS may answer differently on the second lookup. Every
HTTP stack in the worker (requests/urllib3, http.client, yt-dlp's urllib and requests handlers)
ends in `socket.socket.connect` with the resolved address, so that is where the check lives:
`install()` wraps `socket.socket.connect`/`connect_ex` once per process.

The wrapper only checks connections made by a thread inside a `guarded()` scope (a thread-local),
so the same process's own connections to Redis and the database, often on private addresses, are
untouched. Code that must reach the database from inside a scope (progress callbacks) steps out
with `unguarded()`. Threads started inside a scope are not guarded: callers must not download
from other threads (yt-dlp downloads fragments in the calling thread unless told otherwise).

A scope also tracks the TCP connections it opened, so another thread can `abort()` them (a
cancelled job, a total deadline): shutting a socket down wakes a read blocked on it, whatever
library or TLS layer sits on top.
"""
from __future__ import annotations

import ipaddress
import socket
import threading
from contextlib import contextmanager

_local = threading.local()
_install_lock = threading.Lock()
_installed = False

_NAT64 = ipaddress.ip_network("64:ff9b::/96")          # well-known NAT64: embeds an IPv4 address
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")   # local-use NAT64 (RFC 8215)
_IPV4_COMPAT = ipaddress.ip_network("::/96")            # deprecated IPv4-compatible addresses


class BlockedAddress(ConnectionRefusedError):
    """A guarded connection to a non-public address was refused (an OSError, so every HTTP
    library reports it as a failed connection; the scope records the details)."""

    def __init__(self, address: str, port, reason: str):
        super().__init__(f"connection to {address} refused: {reason} address")
        self.address, self.port, self.reason = address, port, reason


class Aborted(ConnectionAbortedError):
    """A connection was attempted in a scope that has been aborted."""


def non_public_reason(address) -> str | None:
    """Why an IP address is not a public unicast one ('loopback', 'private', ...), or None.

    IPv6 forms that carry an IPv4 address (IPv4-mapped, NAT64 64:ff9b::/96, 6to4 2002::/16) are
    judged by that IPv4 address; Teredo, local-use NAT64 and IPv4-compatible ones are refused.
    """
    ip = ipaddress.ip_address(str(address).split("%")[0])
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return _v4_reason(ip.ipv4_mapped, "IPv4-mapped ")
        if ip in _NAT64:
            return _v4_reason(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), "NAT64 ")
        if ip.sixtofour is not None:
            return _v4_reason(ip.sixtofour, "6to4 ")
        if ip.teredo is not None:
            return "Teredo"
        if ip in _NAT64_LOCAL:
            return "local-use NAT64"
        if ip in _IPV4_COMPAT:
            return "unspecified" if ip.is_unspecified else \
                "loopback" if ip.is_loopback else "IPv4-compatible"
    return _plain_reason(ip)


def _v4_reason(v4: ipaddress.IPv4Address, prefix: str) -> str | None:
    reason = _plain_reason(v4)
    return prefix + reason if reason else None


def _plain_reason(ip) -> str | None:
    # Order matters only for the message: the most specific class first.
    for reason, test in (("unspecified", ip.is_unspecified), ("loopback", ip.is_loopback),
                         ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
                         ("reserved", ip.is_reserved), ("private", ip.is_private)):
        if test:
            return reason
    if ip.version == 6 and ip.is_site_local:
        return "site-local"
    if not ip.is_global:      # shared address space 100.64/10, benchmarking, ...
        return "non-public"
    return None


class AllowList:
    """ALLOWED_PRIVATE_NETWORKS: CIDRs, addresses and host names (resolved when needed), each
    optionally with a port (`10.0.0.5:8080`, `[fd00::5]:8080`, `nas.lan:8000`)."""

    def __init__(self, spec: str = ""):
        self.networks: list[tuple] = []     # (network, port or None)
        self.hosts: list[tuple] = []        # (host name, port or None)
        for item in (part.strip() for part in (spec or "").split(",")):
            if not item:
                continue
            host, port = item, None
            if item.startswith("["):                          # [v6]:port or [v6]
                host, _, rest = item[1:].partition("]")
                port = int(rest[1:]) if rest.startswith(":") else None
            elif item.count(":") == 1:                        # v4/name:port (bare v6 has more)
                host, port = item.split(":")
                port = int(port)
            try:
                self.networks.append((ipaddress.ip_network(host, strict=False), port))
            except ValueError:
                self.hosts.append((host.lower(), port))

    def allows(self, ip, port=None) -> bool:
        ip = ipaddress.ip_address(str(ip).split("%")[0])
        candidates = [ip] + ([ip.ipv4_mapped] if ip.version == 6 and ip.ipv4_mapped else [])

        def port_ok(allowed):
            return allowed is None or allowed == port

        if any(c in net and port_ok(p) for c in candidates for net, p in self.networks
               if c.version == net.version):
            return True
        for host, p in self.hosts:
            if not port_ok(p):
                continue
            try:
                infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
            except (OSError, UnicodeError):
                continue
            if any(ipaddress.ip_address(i[4][0].split("%")[0]) in candidates for i in infos):
                return True
        return False


class Scope:
    """One guarded() scope: what it refused, the connections it opened, whether it was aborted."""

    def __init__(self, allow: AllowList, block: bool):
        self.allow, self.block = allow, block
        self.blocked: list[BlockedAddress] = []
        self.abort_reason: str | None = None
        self._connections: list[tuple[int, int, tuple, tuple]] = []
        self._lock = threading.Lock()

    def check(self, sock, address) -> None:
        if self.abort_reason:
            raise Aborted(f"download stopped: {self.abort_reason}")
        if sock.family not in (socket.AF_INET, socket.AF_INET6) or not self.block:
            return
        host, port = address[0], address[1]
        reason = non_public_reason(host)
        if reason and not self.allow.allows(host, port):
            exc = BlockedAddress(str(host).split("%")[0], port, reason)
            self.blocked.append(exc)
            raise exc

    def opened(self, sock) -> None:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return
        try:
            entry = (sock.fileno(), sock.family, sock.getsockname(), sock.getpeername())
        except OSError:
            return
        with self._lock:
            self._connections.append(entry)

    def abort(self, reason: str) -> None:
        """Stop this scope's downloads from another thread: refuse new connections and shut the
        open ones down (a blocked read returns at once)."""
        self.abort_reason = reason
        with self._lock:
            connections = list(self._connections)
        for fd, family, local, peer in connections:
            try:
                dup = socket.fromfd(fd, family, socket.SOCK_STREAM)
            except OSError:
                continue          # already closed
            try:
                # The descriptor may have been closed and reused since: only the same connection
                # (same local and remote endpoint) is shut down.
                if dup.getsockname() == local and dup.getpeername() == peer:
                    dup.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            finally:
                dup.close()


def _scope() -> Scope | None:
    return getattr(_local, "scope", None)


def install() -> None:
    """Wrap socket.socket.connect/connect_ex (once per process; inert outside guarded())."""
    global _installed
    with _install_lock:
        if _installed:
            return
        real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

        def connect(self, address):
            scope = _scope()
            if scope is None:
                return real_connect(self, address)
            scope.check(self, address)
            real_connect(self, address)
            scope.opened(self)

        def connect_ex(self, address):
            scope = _scope()
            if scope is None:
                return real_connect_ex(self, address)
            scope.check(self, address)
            result = real_connect_ex(self, address)
            if result == 0:
                scope.opened(self)
            return result

        socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
        _installed = True


@contextmanager
def guarded(allowed: str = "", block: bool = True):
    """Run the body with this thread's connections checked (and tracked for abort()).

    allowed: ALLOWED_PRIVATE_NETWORKS. block=False only tracks connections (abort still works).
    """
    install()
    outer = _scope()
    scope = Scope(AllowList(allowed), block)
    _local.scope = scope
    try:
        yield scope
    finally:
        _local.scope = outer


@contextmanager
def unguarded():
    """Step out of the current scope (the worker's own database writes from a progress callback)."""
    outer = _scope()
    _local.scope = None
    try:
        yield
    finally:
        _local.scope = outer


def kind_of_address(reason: str) -> str:
    """"a loopback address", "an unspecified address", "an IPv4-mapped ... address"."""
    article = "an" if reason[:1].lower() in "aeiou" or reason.startswith("IPv") else "a"
    return f"{article} {reason} address"


def describe(exc: BlockedAddress) -> str:
    """The user-facing sentence for a refused address, naming the setting that allows it."""
    where = f"[{exc.address}]" if ":" in exc.address else exc.address
    return (f"The address {where}:{exc.port} is {kind_of_address(exc.reason)}; this service only fetches "
            f"from public addresses. To allow it, add {exc.address} (or its network, or "
            f"{where}:{exc.port}) to ALLOWED_PRIVATE_NETWORKS.")
