"""The SSRF guard for webhook URLs.

A callback URL is only ever connected to at an address that was checked here: every
address its host resolves to must be globally routable (or inside an allowlisted
network), and the sender connects to the checked address itself, so a DNS answer
that changes between check and connect (rebinding) cannot slip through.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

import httpx

from service.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

# Ranges refused even where Python's ``is_global`` would let them through.
_ALWAYS_REFUSED = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "100.64.0.0/10",  # CGNAT
        "169.254.0.0/16",  # link-local, cloud metadata (169.254.169.254)
        "192.0.0.0/24",
        "198.18.0.0/15",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved
        "255.255.255.255/32",
        "64:ff9b::/96",  # NAT64 (embeds IPv4)
        "64:ff9b:1::/48",
        "2002::/16",  # 6to4 (embeds IPv4)
        "2001::/32",  # Teredo
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "ff00::/8",  # multicast
        "fec0::/10",  # site-local (deprecated)
        "100::/64",  # discard
        "::/128",
        "::1/128",
        "::/8",  # reserved by the IETF, incl. IPv4-compatible ::a.b.c.d
    )
)


class UnsafeURL(InvalidInput):
    title = "Webhook URL refused"
    slug = "webhook-url-refused"


def refusal(address: IPAddress, allow: Sequence[IPNetwork] = ()) -> str | None:
    """Why ``address`` may not be called, or None when it may."""
    if any(address in network for network in allow if network.version == address.version):
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        mapped = refusal(address.ipv4_mapped, allow)
        return f"IPv4-mapped {mapped}" if mapped else None
    for network in _ALWAYS_REFUSED:
        if network.version == address.version and address in network:
            return f"{address} is in {network}, which is not publicly routable"
    if not address.is_global:
        return f"{address} is not a publicly routable address"
    return None


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class Target:
    """A checked destination: the URL as given and the address to connect to."""

    url: SplitResult
    host: str
    port: int
    address: IPAddress


def parse_url(url: str) -> SplitResult:
    # urlsplit drops leading spaces and some control characters that httpx then reads
    # differently (as a relative URL): such a URL was checked here but never sendable.
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise UnsafeURL("the webhook URL must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a bad port
    except ValueError as exc:
        raise UnsafeURL(f"the webhook URL is not valid: {exc}") from exc
    if port == 0:
        raise UnsafeURL("the webhook URL's port must be 1-65535")
    if parts.scheme not in ("http", "https"):
        raise UnsafeURL("the webhook URL must be http or https")
    if parts.username is not None or parts.password is not None:
        raise UnsafeURL("the webhook URL must not carry a user name or password")
    if not parts.hostname:
        raise UnsafeURL("the webhook URL has no host")
    return parts


def check(
    url: str, *, allow: Sequence[IPNetwork] = (), resolver: Resolver = system_resolver
) -> Target:
    """Resolve the URL's host and check every address; the first one is the target."""
    parts = parse_url(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        literal = ipaddress.ip_address(host)
        addresses: list[IPAddress] = [literal]
    except ValueError:
        addresses = _resolve(host, port, resolver)
    for address in addresses:
        reason = refusal(address, allow)
        if reason:
            raise UnsafeURL(f"the webhook host {host!r} is refused: {reason}")
    _check_sendable(url)
    return Target(parts, host, port, addresses[0])


def _check_sendable(url: str) -> None:
    """What the system resolver reads, httpx may still refuse (``010.8.8.8``: octal
    to one, a malformed address to the other); refuse it here rather than at send."""
    try:
        httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise UnsafeURL(f"the webhook URL is not valid: {exc}") from exc


def _resolve(host: str, port: int, resolver: Resolver) -> list[IPAddress]:
    try:
        found = resolver(host, port)
    except (OSError, UnicodeError) as exc:  # UnicodeError: an empty or too long label
        raise UnsafeURL(f"the webhook host {host!r} does not resolve: {exc}") from exc
    addresses = []
    for text in found:
        try:
            addresses.append(ipaddress.ip_address(text.split("%", 1)[0]))
        except ValueError as exc:
            raise UnsafeURL(f"the webhook host {host!r} resolved to {text!r}") from exc
    if not addresses:
        raise UnsafeURL(f"the webhook host {host!r} does not resolve")
    return addresses
