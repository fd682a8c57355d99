"""Which hosts a package index URL may reach: public addresses, plus what the operator lists.

A tenant names the index its packages come from. Without a policy that is a way into the control plane's
own network: an index on 127.0.0.1 reaches the API, Redis and the databases; a private address reaches the
operator's other services, and pip's error text tells which ports answer. So an index URL must be http(s)
and every address its host resolves to must be public: not loopback, link-local, private (RFC 1918, ULA,
carrier-grade NAT), multicast, unspecified, reserved, nor one of this host's own addresses. The operator can
allow more with SANDBOX_PACKAGE_INDEX_ALLOW, a comma-separated list of entries:

- `mirror.internal` - that host name, on any port, whatever it resolves to;
- `mirror.internal:8443` - that host name on that port only;
- `10.1.2.3` or `10.0.0.0/8` or `fd00::/8` - destinations resolving into that address or network;
- `10.1.2.3:3141` or `[fd00::1]:3141` - that address on that port only.

The same decision is made twice: when the API accepts a URL (a quick answer for the tenant) and again, for
every host pip actually contacts, by the egress proxy the download goes through (egress_proxy.py), which
resolves each host once and connects to the pinned address, so a second DNS answer cannot swap in another
address. Refusals carry one message whatever the reason (no DNS result or port state leaks).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

REFUSED_MESSAGE = (
    "the package index must be an http(s) URL whose host resolves only to public addresses; loopback, "
    "private, link-local, multicast and this host's own addresses are refused unless the operator allows "
    "them (SANDBOX_PACKAGE_INDEX_ALLOW)"
)

# Ranges no tenant-named index may reach. Listed explicitly rather than with `ipaddress`'s is_private /
# is_global, which also count documentation and benchmarking ranges some networks really route.
REFUSED_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)


class IndexRefused(ValueError):
    """The URL or destination is not allowed; str() is REFUSED_MESSAGE (or a plain syntax complaint)."""


@dataclass(frozen=True)
class AllowEntry:
    host: str = ""  # a host name, lower case; or empty when `network` is set
    network: IPNetwork | None = None
    port: int | None = None

    def matches(self, host: str, port: int, address: IPAddress | None) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            return address is not None and _unmapped(address) in self.network
        return self.host == host.lower().rstrip(".")


@dataclass(frozen=True)
class IndexPolicy:
    """The operator's allow list plus this host's own addresses, taken when the policy is built."""

    allow: tuple[AllowEntry, ...] = ()
    own_addresses: frozenset[IPAddress] = field(default_factory=frozenset)

    def host_allowed(self, host: str, port: int) -> bool:
        """A host name listed by name is allowed without looking at what it resolves to."""
        return any(e.network is None and e.matches(host, port, None) for e in self.allow)

    def address_allowed(self, host: str, port: int, address: IPAddress) -> bool:
        if any(e.matches(host, port, address) for e in self.allow):
            return True
        plain = _unmapped(address)
        if plain in self.own_addresses or any(plain in net for net in REFUSED_NETWORKS):
            return False
        return not (plain.is_multicast or plain.is_unspecified or plain.is_loopback or plain.is_link_local)


def parse_allow(text: str) -> tuple[AllowEntry, ...]:
    """SANDBOX_PACKAGE_INDEX_ALLOW's entries; ValueError naming a malformed one."""
    entries = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        host, port = item, None
        if item.startswith("["):  # [v6]:port or [v6]
            close = item.find("]")
            if close < 0:
                raise ValueError(f"bad SANDBOX_PACKAGE_INDEX_ALLOW entry {item!r}")
            host, rest = item[1:close], item[close + 1 :]
            if rest:
                port = _port(rest.removeprefix(":"), item)
        elif item.count(":") == 1:
            host, port_text = item.split(":")
            port = _port(port_text, item)
        try:
            network = ipaddress.ip_network(host, strict=False)
        except ValueError:
            if not host or "/" in host or any(c.isspace() for c in host):
                raise ValueError(f"bad SANDBOX_PACKAGE_INDEX_ALLOW entry {item!r}") from None
            entries.append(AllowEntry(host=host.lower().rstrip("."), port=port))
        else:
            entries.append(AllowEntry(network=network, port=port))
    return tuple(entries)


def _port(text: str, item: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port in SANDBOX_PACKAGE_INDEX_ALLOW entry {item!r}")
    return int(text)


def _unmapped(address: IPAddress) -> IPAddress:
    """::ffff:127.0.0.1 is 127.0.0.1 (and is refused as such)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def own_addresses() -> frozenset[IPAddress]:
    """Every address configured on this host's interfaces (read from /proc: no extra dependency)."""
    found: set[IPAddress] = set()
    try:
        with open("/proc/net/fib_trie", encoding="ascii", errors="replace") as fh:
            lines = fh.read().splitlines()
        for previous, line in zip(lines, lines[1:], strict=False):
            if "/32 host LOCAL" in line:
                found.add(ipaddress.ip_address(previous.split()[-1]))
    except (OSError, ValueError):
        pass
    try:
        with open("/proc/net/if_inet6", encoding="ascii") as fh:
            for line in fh:
                raw = line.split()[0]
                found.add(ipaddress.ip_address(":".join(raw[i : i + 4] for i in range(0, 32, 4))))
    except (OSError, ValueError, IndexError):
        pass
    return frozenset(found)


def policy(allow_text: str, *, extra: tuple[AllowEntry, ...] = ()) -> IndexPolicy:
    return IndexPolicy(allow=parse_allow(allow_text) + extra, own_addresses=own_addresses())


def split_url(url: str) -> tuple[str, int]:
    """(host, port) of an http(s) URL; IndexRefused when it is not one."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise IndexRefused(REFUSED_MESSAGE) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise IndexRefused(REFUSED_MESSAGE)
    return parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to now; IndexRefused (never the resolver's own words) when none."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise IndexRefused(REFUSED_MESSAGE) from None
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise IndexRefused(REFUSED_MESSAGE)
    return addresses


def pick_address(rules: IndexPolicy, host: str, port: int) -> IPAddress | None:
    """The address to connect to for host:port, or None when the destination is refused.

    Every resolved address must be allowed, not just one: a name answering both a public and a private
    address would otherwise be a coin toss the tenant could win. A name the operator listed is trusted.
    """
    try:
        addresses = resolve(host, port)
    except IndexRefused:
        return None
    if rules.host_allowed(host, port):
        return addresses[0]
    if all(rules.address_allowed(host, port, a) for a in addresses):
        return addresses[0]
    return None


def check_url(url: str, rules: IndexPolicy) -> None:
    """IndexRefused unless `url` is http(s) and its host may be reached under `rules`."""
    host, port = split_url(url)
    if pick_address(rules, host, port) is None:
        raise IndexRefused(REFUSED_MESSAGE)
