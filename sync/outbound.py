"""The outbound-URL guard: every request to a URL an operator typed (feeds, the notification
webhook) goes through it.

A host is resolved once per connection, every address it resolves to is checked, and the socket is
opened to a checked address, so a DNS answer that changes between the check and the connection
(rebinding) cannot slip through. Because the check sits where connections are made, redirects and
next-page links are checked like the first URL. Loopback, private, link-local, cloud metadata,
multicast and reserved addresses are refused (IPv4, IPv6, IPv4 inside IPv6, and numeric forms such
as ``2130706433`` or ``0177.0.0.1``, which the resolver turns into the address they mean), unless
the ``OUTBOUND_ALLOW`` setting lists the host or a network holding the address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import typing
from collections.abc import Iterable
from dataclasses import dataclass

import httpcore
import httpx
from httpcore._backends.auto import AutoBackend

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
RESOLVE_TIMEOUT_S = 5.0
# Cloud instance metadata services: refused even when an allowed network holds them.
METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class OutboundRefused(httpx.ConnectError):
    """The URL's host is not one the console may reach; the message says why, for the operator."""


@dataclass(frozen=True, slots=True)
class AllowList:
    """Hosts (``feeds.internal``, ``*.corp.example``) and networks (``10.2.0.0/16``) that may be
    reached although their addresses are private."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, text: str) -> AllowList:
        """Comma- or space-separated entries; ValueError names an entry that is neither."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in text.replace(",", " ").split():
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            name = entry.lower().rstrip(".")
            if not name.removeprefix("*.").replace("-", "").replace(".", "").replace("_", "").isalnum():
                raise ValueError(f"OUTBOUND_ALLOW: {entry!r} is neither a host name nor a network.")
            hosts.add(name)
        return cls(frozenset(hosts), tuple(networks))

    def allows_host(self, host: str) -> bool:
        name = host.lower().rstrip(".")
        return name in self.hosts or any(h.startswith("*.") and name.endswith(h[1:]) for h in self.hosts)

    def allows_address(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)

    def describe(self) -> str:
        """The entries as the settings page shows them."""
        return ", ".join([*sorted(self.hosts), *(str(n) for n in self.networks)])

    def __bool__(self) -> bool:
        return bool(self.hosts or self.networks)


def refusal(address: IPAddress) -> str | None:
    """Why an address may not be reached (a short kind, e.g. "a loopback address"), or None."""
    if address in METADATA:
        return "a cloud metadata address"
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return refusal(embedded)
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_unspecified or address.is_reserved:
        return "a reserved address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "a reserved address"
    return None


def _numeric(host: str) -> IPAddress | None:
    """The address a numeric host means, in any form the resolver accepts (decimal, octal, hex)."""
    try:
        found = socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError):
        return None
    return ipaddress.ip_address(str(found[0][4][0]).split("%")[0])


def _check(host: str, addresses: Iterable[IPAddress], allow: AllowList) -> None:
    if allow.allows_host(host):
        return
    for address in addresses:
        why = refusal(address)
        if why is not None and not (address not in METADATA and allow.allows_address(address)):
            raise OutboundRefused(
                f"{host} is {why}, which the console does not reach"
                if _numeric(host) is not None
                else f"{host} resolves to {why}, which the console does not reach"
            )


def check_syntax(url: str, what: str = "URL") -> str | None:
    """Why the URL cannot be used, judged without a DNS lookup (scheme, host, numeric addresses)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return f"The {what} is not a valid URL."
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return f"The {what} must start with http:// or https:// and name a host."
    if parsed.userinfo:
        return f"The {what} must not carry a user name or password; use an auth header."
    return None


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address the host resolves to (numeric forms included)."""
    loop = asyncio.get_running_loop()
    found = await asyncio.wait_for(
        loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout=RESOLVE_TIMEOUT_S
    )
    return list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in found))


async def url_problem(url: str, allow: AllowList, what: str = "URL") -> str | None:
    """Why the console may not call this URL, or None. A host that does not resolve yet is let
    through: the fetch says so, with the same check at connection time."""
    problem = check_syntax(url, what)
    if problem:
        return problem
    parsed = httpx.URL(url)
    try:
        addresses = await resolve(parsed.host, parsed.port or 443)
    except (OSError, TimeoutError, UnicodeError):
        return None
    try:
        _check(parsed.host, addresses, allow)
    except OutboundRefused as exc:
        return f"The {what} cannot be used: {exc}. An admin can allow it with OUTBOUND_ALLOW."
    return None


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks, then connects to a checked address (never resolves the name again)."""

    def __init__(self, allow: AllowList) -> None:
        self.allow = allow
        self.inner = AutoBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await resolve(host, port)
        except (OSError, TimeoutError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        _check(host, addresses, self.allow)
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not reachable from outbound URLs")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with the guard where connections are opened."""

    def __init__(self, allow: AllowList, **kwargs: typing.Any) -> None:
        super().__init__(**kwargs)
        # httpx builds its pool without a way to pass a network backend; set it on the pool.
        pool = self._pool
        assert isinstance(pool, httpcore.AsyncConnectionPool)
        pool._network_backend = _GuardedBackend(allow)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except OutboundRefused as exc:  # raised below httpx, so it has no request yet
            raise OutboundRefused(str(exc), request=request) from None


def client(allow: AllowList, **kwargs: typing.Any) -> httpx.AsyncClient:
    """An httpx client that reaches only public addresses (and the allow-list); never proxies from
    the environment, never follows redirects by itself."""
    return httpx.AsyncClient(transport=GuardedTransport(allow), trust_env=False, **kwargs)
