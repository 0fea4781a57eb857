"""Which webhook URLs users may point Darkroom at: https, on public addresses only.

A URL is checked when an endpoint is created, and every delivery connects only to
addresses that pass the same test (`GuardedResolver`): the name is resolved once, the
addresses are checked, and the connection goes to a checked address, so a DNS answer
that changes between the check and the connection (rebinding) gains nothing.
DARKROOM_WEBHOOK_ALLOW_PRIVATE_TARGETS lifts both, for development.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class TargetRefused(ValueError):
    """The URL or the address it resolves to is not one Darkroom delivers to."""


def forbidden(ip: IPAddress) -> bool:
    """Loopback, private, link-local (cloud metadata), unspecified, multicast, reserved or
    shared space, also when wrapped in an IPv6 address (v4-mapped, NAT64, 6to4, Teredo)."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_v4(ip)
        if embedded is not None:
            return forbidden(embedded)
    return ip.is_multicast or not ip.is_global


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def check_url(url: str, *, allow_private: bool) -> URL:
    """The URL parsed, if its form is one Darkroom delivers to; TargetRefused otherwise.
    Addresses are checked separately (`check_resolves`)."""
    try:
        parsed = URL(url)
    except ValueError as exc:
        raise TargetRefused("not a URL") from exc
    schemes = ("https", "http") if allow_private else ("https",)
    if parsed.scheme not in schemes:
        raise TargetRefused("must be an https URL")
    if not parsed.host:
        raise TargetRefused("has no host")
    if parsed.user or parsed.password:
        raise TargetRefused("must not carry credentials")
    return parsed


async def check_resolves(url: URL, *, allow_private: bool) -> None:
    """Every address the URL's host resolves to must be allowed (creation time)."""
    if allow_private or url.host is None:
        return
    literal = _literal(url.host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                url.host, url.port or 443, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise TargetRefused(f"{url.host} does not resolve") from exc
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not addresses or any(forbidden(ip) for ip in addresses):
        raise TargetRefused(f"{url.host} resolves to a loopback, private or reserved address")


def check_literal(url: URL) -> None:
    """An IP literal host skips the resolver, so it is checked here (delivery time)."""
    literal = _literal(url.host or "")
    if literal is not None and forbidden(literal):
        raise TargetRefused(f"{url.host} is a loopback, private or reserved address")


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return None


class GuardedResolver(AbstractResolver):
    """Resolves as usual and hands the connector only the allowed addresses."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        allowed = [r for r in found if not forbidden(ipaddress.ip_address(r["host"]))]
        if not allowed:
            raise OSError(f"{host} resolves only to loopback, private or reserved addresses")
        return allowed

    async def close(self) -> None:
        await self._inner.close()
