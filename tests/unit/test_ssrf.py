"""The SSRF guard: which addresses a webhook may go to. Pure functions and an injected
resolver; nothing here opens a socket."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from service import ssrf
from service.ssrf import UnsafeURL, refusal


def ip(text: str) -> ssrf.IPAddress:
    return ipaddress.ip_address(text)


def nets(*texts: str) -> list[ssrf.IPNetwork]:
    return [ipaddress.ip_network(t) for t in texts]


# (address, why it is refused): the first, last and a middle address of every range
REFUSED = [
    # RFC 1918 private
    ("10.0.0.0", "private 10/8"),
    ("10.0.0.1", "private 10/8"),
    ("10.123.45.67", "private 10/8"),
    ("10.255.255.255", "private 10/8"),
    ("172.16.0.0", "private 172.16/12"),
    ("172.16.0.1", "private 172.16/12"),
    ("172.20.10.5", "private 172.16/12"),
    ("172.31.255.255", "private 172.16/12"),
    ("192.168.0.0", "private 192.168/16"),
    ("192.168.1.1", "private 192.168/16"),
    ("192.168.255.255", "private 192.168/16"),
    # link-local, and the cloud metadata address inside it
    ("169.254.0.0", "link-local"),
    ("169.254.0.1", "link-local"),
    ("169.254.169.254", "cloud metadata"),
    ("169.254.170.2", "ECS task metadata"),
    ("169.254.255.255", "link-local"),
    # carrier-grade NAT
    ("100.64.0.0", "CGNAT"),
    ("100.64.0.1", "CGNAT"),
    ("100.100.100.200", "CGNAT (Alibaba metadata)"),
    ("100.127.255.255", "CGNAT"),
    # loopback
    ("127.0.0.1", "loopback"),
    ("127.0.1.1", "loopback"),
    ("127.255.255.254", "loopback"),
    # "this network"
    ("0.0.0.0", "this network"),
    ("0.1.2.3", "this network"),
    ("0.255.255.255", "this network"),
    # other special-purpose IPv4
    ("192.0.0.1", "IETF protocol assignments"),
    ("192.0.2.1", "TEST-NET-1"),
    ("198.18.0.1", "benchmarking"),
    ("198.51.100.1", "TEST-NET-2"),
    ("203.0.113.1", "TEST-NET-3"),
    # multicast
    ("224.0.0.0", "multicast"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast (SSDP)"),
    ("239.255.255.255", "multicast"),
    # reserved, and broadcast
    ("240.0.0.0", "reserved"),
    ("240.0.0.1", "reserved"),
    ("250.1.2.3", "reserved"),
    ("255.255.255.254", "reserved"),
    ("255.255.255.255", "broadcast"),
    # IPv6 loopback and unspecified
    ("::1", "IPv6 loopback"),
    ("::", "IPv6 unspecified"),
    # unique local fc00::/7
    ("fc00::", "unique local"),
    ("fc00::1", "unique local"),
    ("fd12:3456:789a::1", "unique local"),
    ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "unique local"),
    # link-local fe80::/10
    ("fe80::", "IPv6 link-local"),
    ("fe80::1", "IPv6 link-local"),
    ("fe80::1ff:fe23:4567:890a", "IPv6 link-local"),
    ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "IPv6 link-local"),
    ("fec0::1", "IPv6 site-local"),
    # multicast ff00::/8
    ("ff00::", "IPv6 multicast"),
    ("ff02::1", "IPv6 multicast (all nodes)"),
    ("ff05::1:3", "IPv6 multicast (DHCP)"),
    ("ff0e::1", "IPv6 multicast (global scope)"),
    ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "IPv6 multicast"),
    # IPv4-mapped forms of refused IPv4 addresses
    ("::ffff:10.0.0.1", "IPv4-mapped private"),
    ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
    ("::ffff:169.254.169.254", "IPv4-mapped metadata"),
    ("::ffff:0.0.0.0", "IPv4-mapped this-network"),
    ("::ffff:100.64.0.1", "IPv4-mapped CGNAT"),
    ("::ffff:7f00:1", "IPv4-mapped loopback, hex spelling"),
    # 6to4 2002::/16: one embedding 10.0.0.1, one embedding a public address
    ("2002:0a00:0001::", "6to4 of 10.0.0.1"),
    ("2002:0a00:0001::1", "6to4 of 10.0.0.1"),
    ("2002:7f00:0001::1", "6to4 of 127.0.0.1"),
    ("2002:a9fe:a9fe::1", "6to4 of 169.254.169.254"),
    ("2002:0808:0808::1", "6to4 of the public 8.8.8.8"),
    # NAT64 (well-known and local-use prefixes)
    ("64:ff9b::a00:1", "NAT64 of 10.0.0.1"),
    ("64:ff9b::7f00:1", "NAT64 of 127.0.0.1"),
    ("64:ff9b::808:808", "NAT64 of the public 8.8.8.8"),
    ("64:ff9b:1::a00:1", "local-use NAT64"),
    # Teredo 2001::/32
    ("2001::1", "Teredo"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo (RFC 4380 example)"),
    # other special-purpose IPv6
    ("2001:db8::1", "IPv6 documentation"),
    ("100::1", "IPv6 discard"),
    ("::a00:1", "IPv4-compatible 10.0.0.1 (deprecated)"),
    ("::7f00:1", "IPv4-compatible 127.0.0.1 (deprecated)"),
    ("::2", "IETF reserved ::/8"),
    ("1::1", "IETF reserved ::/8"),
]

PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "9.255.255.255",  # just below 10/8
    "11.0.0.0",  # just above 10/8
    "172.15.255.255",  # just below 172.16/12
    "172.32.0.0",  # just above 172.16/12
    "192.167.255.255",
    "192.169.0.0",
    "100.63.255.255",  # just below CGNAT
    "100.128.0.0",  # just above CGNAT
    "169.253.255.255",
    "169.255.0.0",
    "223.255.255.255",  # just below multicast
    "2606:4700:4700::1111",
    "2001:4860:4860::8888",
    "2a00:1450:4001:80b::200e",
    "2003::1",  # just above 6to4
    "::ffff:8.8.8.8",  # the mapped form of a public address is that address
]


@pytest.mark.parametrize(("address", "why"), REFUSED, ids=[a for a, _ in REFUSED])
def test_refused_ranges(address: str, why: str) -> None:
    reason = refusal(ip(address))
    assert reason is not None, f"{address} ({why}) must be refused"


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_allowed(address: str) -> None:
    assert refusal(ip(address)) is None


def test_reasons_name_the_address_and_range() -> None:
    assert refusal(ip("169.254.169.254")) == (
        "169.254.169.254 is in 169.254.0.0/16, which is not publicly routable"
    )
    assert refusal(ip("2002:a00:1::")) == (
        "2002:a00:1:: is in 2002::/16, which is not publicly routable"
    )
    assert refusal(ip("10.0.0.1")) == "10.0.0.1 is not a publicly routable address"
    mapped = refusal(ip("::ffff:127.0.0.1"))
    assert mapped is not None and mapped.startswith("IPv4-mapped 127.0.0.1")


@pytest.mark.parametrize(
    ("allow", "opened", "still_refused"),
    [
        (
            ["127.0.0.0/8"],
            ["127.0.0.1", "127.1.2.3", "::ffff:127.0.0.1"],
            ["::1", "10.0.0.1", "169.254.169.254", "0.0.0.0"],
        ),
        (["127.0.0.1/32"], ["127.0.0.1"], ["127.0.0.2", "::1"]),
        (["::1/128"], ["::1"], ["127.0.0.1", "::2", "fe80::1"]),
        (
            ["10.1.0.0/16"],
            ["10.1.0.0", "10.1.255.255", "::ffff:10.1.2.3"],
            ["10.0.255.255", "10.2.0.0", "192.168.1.1"],
        ),
        (
            ["fd00:1234::/32"],
            ["fd00:1234::1", "fd00:1234:ffff::9"],
            ["fd00:1235::1", "fc00::1", "10.0.0.1"],
        ),
        (
            ["169.254.169.254/32", "192.168.0.0/24"],
            ["169.254.169.254", "192.168.0.77"],
            ["169.254.169.253", "192.168.1.1"],
        ),
    ],
)
def test_allowlist_opens_exactly_the_named_ranges(
    allow: list[str], opened: list[str], still_refused: list[str]
) -> None:
    networks = nets(*allow)
    for address in opened:
        assert refusal(ip(address), networks) is None, (address, allow)
    for address in still_refused:
        assert refusal(ip(address), networks) is not None, (address, allow)


def test_allowlist_does_not_close_public_addresses() -> None:
    assert refusal(ip("8.8.8.8"), nets("10.0.0.0/8")) is None


# -- check(): URL rules and every resolved address ----------------------------------------


class FakeDNS:
    """An injected resolver: names to answers, and a record of what was asked."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        if host not in self.answers:
            raise OSError(-2, "Name or service not known")
        return self.answers[host]


def test_check_resolves_and_targets_the_first_address() -> None:
    dns = FakeDNS({"hooks.example": ["93.184.216.34", "2606:2800:220:1::248"]})
    target = ssrf.check("https://hooks.example/cb?x=1", resolver=dns)
    assert target.address == ip("93.184.216.34")
    assert (target.host, target.port) == ("hooks.example", 443)
    assert target.url.path == "/cb" and target.url.query == "x=1"
    assert dns.asked == [("hooks.example", 443)]


def test_check_default_and_explicit_ports() -> None:
    dns = FakeDNS({"hooks.example": ["93.184.216.34"]})
    assert ssrf.check("http://hooks.example/", resolver=dns).port == 80
    assert ssrf.check("http://hooks.example:8080/", resolver=dns).port == 8080
    assert dns.asked == [("hooks.example", 80), ("hooks.example", 8080)]


def test_a_name_with_one_public_and_one_private_address_is_refused() -> None:
    dns = FakeDNS({"mixed.example": ["93.184.216.34", "10.0.0.5"]})
    with pytest.raises(UnsafeURL) as exc:
        ssrf.check("https://mixed.example/hook", resolver=dns)
    assert "mixed.example" in exc.value.detail and "10.0.0.5" in exc.value.detail


def test_private_first_then_public_is_refused_too() -> None:
    dns = FakeDNS({"mixed.example": ["fd00::1", "93.184.216.34"]})
    with pytest.raises(UnsafeURL, match="fd00::1"):
        ssrf.check("https://mixed.example/hook", resolver=dns)


def test_allowlisted_resolution_is_accepted() -> None:
    dns = FakeDNS({"localhost": ["127.0.0.1"]})
    target = ssrf.check("http://localhost:9000/hook", allow=nets("127.0.0.0/8"), resolver=dns)
    assert target.address == ip("127.0.0.1") and target.host == "localhost"


def test_scoped_ipv6_answer_is_checked_without_its_zone() -> None:
    dns = FakeDNS({"ll.example": ["fe80::1%eth0"]})
    with pytest.raises(UnsafeURL, match="fe80::1"):
        ssrf.check("http://ll.example/", resolver=dns)


def test_unresolvable_host() -> None:
    with pytest.raises(UnsafeURL, match="does not resolve"):
        ssrf.check("https://nowhere.invalid/hook", resolver=FakeDNS({}))


def test_empty_resolution() -> None:
    with pytest.raises(UnsafeURL, match="does not resolve"):
        ssrf.check("https://empty.example/hook", resolver=FakeDNS({"empty.example": []}))


def test_garbage_resolution() -> None:
    with pytest.raises(UnsafeURL, match="resolved to"):
        ssrf.check("https://odd.example/", resolver=FakeDNS({"odd.example": ["not-an-ip"]}))


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("http://[::1]:8080/", "::1"),
        ("http://[::ffff:127.0.0.1]/", "IPv4-mapped"),
        ("http://[fe80::1]/", "fe80::1"),
        ("http://0.0.0.0:80/", "0.0.0.0"),
        ("http://[2002:a00:1::]/", "2002::/16"),
        ("http://[::127.0.0.1]/", "::7f00:1"),
    ],
)
def test_literal_addresses_are_checked_without_resolving(url: str, needle: str) -> None:
    dns = FakeDNS({})
    with pytest.raises(UnsafeURL, match=needle.replace(".", r"\.")):
        ssrf.check(url, resolver=dns)
    assert dns.asked == []


def test_public_literal_is_not_resolved() -> None:
    dns = FakeDNS({})
    target = ssrf.check("https://[2606:4700:4700::1111]:8443/x", resolver=dns)
    assert target.address == ip("2606:4700:4700::1111") and target.port == 8443
    assert dns.asked == []


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("ftp://example.com/hook", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("gopher://example.com/", "http or https"),
        ("javascript:alert(1)", "http or https"),
        ("//example.com/hook", "http or https"),
        ("not a url", "spaces or control"),
        ("  http://example.com/hook", "spaces or control"),
        ("http://example.com/a b", "spaces or control"),
        ("http://example.com/\thook", "spaces or control"),
        ("http://example.com:0/hook", "1-65535"),
        ("https://user@example.com/hook", "user name"),
        ("https://user:pw@example.com/hook", "user name"),
        ("https://:pw@example.com/hook", "user name"),
        ("http:///hook", "no host"),
        ("https://", "no host"),
        ("http://example.com:99999/", "not valid"),
        ("http://example.com:port/", "not valid"),
        ("http://[::1/", "not valid"),
    ],
)
def test_bad_urls(url: str, needle: str) -> None:
    dns = FakeDNS({"example.com": ["93.184.216.34"]})
    with pytest.raises(UnsafeURL, match=needle):
        ssrf.check(url, resolver=dns)
    assert dns.asked == []


def test_refusal_is_a_422() -> None:
    assert UnsafeURL("x").status == 422


def numeric_only(host: str, port: int) -> list[str]:
    """The system's parsing of numeric host spellings, with lookups forbidden
    (AI_NUMERICHOST): no DNS query can leave."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    return [str(info[4][0]) for info in infos]


@pytest.mark.parametrize(
    "host",
    ["0x7f000001", "2130706433", "127.1", "0177.0.0.1", "0x7f.1", "0xa.0.0.1", "3232235777"],
)
def test_odd_numeric_spellings_are_judged_by_what_they_resolve_to(host: str) -> None:
    """inet_aton forms (hex, octal, short, one number) are not ipaddress literals; they
    go through the resolver and the address it gives is what is checked."""
    with pytest.raises(UnsafeURL, match=r"is refused: (127\.0\.0\.1|10\.0\.0\.1|192\.168\.1\.1) "):
        ssrf.check(f"http://{host}/hook", resolver=numeric_only)
