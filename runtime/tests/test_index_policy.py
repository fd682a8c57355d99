"""The package index policy (runtime/packages/index_policy.py) and the egress proxy that enforces it on every host a
download contacts (runtime/packages/egress_proxy.py): real sockets on 127.0.0.1 only."""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator

import pytest

from runtime.packages import egress_proxy
from runtime.packages import index_policy as ip


def rules(allow: str = "") -> ip.IndexPolicy:
    return ip.policy(allow)


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "127.1.2.3", "10.0.0.1", "172.31.0.1", "192.168.0.1", "169.254.169.254", "100.64.0.1",
     "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "::", "fe80::1", "fd00::1", "ff02::1",
     "::ffff:127.0.0.1", "::ffff:10.0.0.1"],
)  # fmt: skip
def test_loopback_private_link_local_multicast_and_unspecified_addresses_are_refused(address):
    assert not rules().address_allowed("h", 80, ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["203.0.113.80", "151.101.0.223", "2a04:4e42::223"])
def test_public_addresses_are_allowed(address):
    assert rules().address_allowed("h", 443, ipaddress.ip_address(address))


def test_this_hosts_own_addresses_are_refused():
    own = ip.own_addresses()
    assert ipaddress.ip_address("127.0.0.1") in own
    for address in own:
        assert not rules().address_allowed("h", 80, address)


def test_the_allow_list_takes_hosts_ports_addresses_and_networks():
    entries = rules("mirror.internal, devpi:3141, 10.0.0.0/8, 127.0.0.1:8080, [fd00::1]:3141")
    ten = ipaddress.ip_address("10.9.8.7")
    loop = ipaddress.ip_address("127.0.0.1")
    assert entries.host_allowed("Mirror.Internal", 443) and entries.host_allowed("mirror.internal.", 80)
    assert entries.host_allowed("devpi", 3141) and not entries.host_allowed("devpi", 3142)
    assert entries.address_allowed("x", 80, ten)
    assert entries.address_allowed("x", 8080, loop) and not entries.address_allowed("x", 8081, loop)
    assert entries.address_allowed("x", 3141, ipaddress.ip_address("fd00::1"))
    assert not entries.address_allowed("x", 3142, ipaddress.ip_address("fd00::1"))
    for bad in ("a b", "host:notaport", "[fd00::1", "10.0.0.0/99:1", "host:70000"):
        with pytest.raises(ValueError):
            ip.parse_allow(bad)


def test_urls_must_be_http_and_resolve_only_to_allowed_addresses():
    for url in ("file:///etc/passwd", "ftp://pypi.org/simple", "http:///simple", "http://localhost/simple"):
        with pytest.raises(ip.IndexRefused) as refused:
            ip.check_url(url, rules())
        assert str(refused.value) == ip.REFUSED_MESSAGE
    with pytest.raises(ip.IndexRefused) as unresolvable:
        ip.check_url("http://no-such-host.invalid/simple", rules())
    assert str(unresolvable.value) == ip.REFUSED_MESSAGE  # the resolver's words never leak
    ip.check_url("http://localhost:3141/simple", rules("localhost"))
    ip.check_url("http://127.0.0.1:3141/simple", rules("127.0.0.1:3141"))


@pytest.fixture
def echo_server() -> Iterator[tuple[int, list[bytes]]]:
    """An HTTP-ish server on 127.0.0.1 that records what it receives and answers 200."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    received: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                data = conn.recv(65536)
                received.append(data)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1], received
    server.close()


def ask(proxy: egress_proxy.EgressProxy, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", proxy.server_address[1]), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_the_proxy_refuses_a_disallowed_host_the_same_way_whether_its_port_is_open_or_closed(echo_server):
    port, received = echo_server
    with egress_proxy.running(rules()) as proxy:
        open_answer = ask(proxy, f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        closed_answer = ask(proxy, f"CONNECT 127.0.0.1:{closed_port()} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        plain = ask(proxy, f"GET http://localhost:{port}/simple/ HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert open_answer == closed_answer == plain == egress_proxy.REFUSAL
    assert received == []


def test_the_proxy_forwards_to_an_allowed_destination_and_pins_its_address(echo_server):
    port, received = echo_server
    with egress_proxy.running(rules(f"localhost:{port}")) as proxy:
        answer = ask(
            proxy, f"GET http://localhost:{port}/simple/six/ HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()
        )
        tunnel = ask(proxy, f"CONNECT localhost:{port} HTTP/1.1\r\n\r\nPING".encode())
        pinned = dict(proxy.pinned)
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"ok")
    assert tunnel.startswith(b"HTTP/1.1 200 Connection established") and tunnel.endswith(b"ok")
    assert received[1] == b"PING"
    assert received[0].startswith(b"GET /simple/six/ HTTP/1.1\r\n")
    assert pinned == {("localhost", port): pinned[("localhost", port)]} and pinned[("localhost", port)]
