"""Who the client is behind a reverse proxy: X-Forwarded-For and X-Forwarded-Proto, believed
only from FRONTDESK_TRUSTED_PROXIES.

A pure ASGI middleware (:class:`ForwardedHeaders`) replaces uvicorn's, which run.py turns off,
so the app behaves the same under any server and in tests. For a request whose socket peer is
a trusted proxy, the client is the right-most X-Forwarded-For entry that is not itself a trusted
proxy: each proxy appends the address it was reached from, so entries left of that one were
written by the client and can be forged (:func:`forwarded_client`). The scheme becomes the
right-most X-Forwarded-Proto entry (``http``/``https``; ``ws``/``wss`` on a websocket), so the
URL Twilio signed is rebuilt as Twilio saw it. From any other peer both headers are ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Loopback: the default trusted proxies (a reverse proxy on the same machine).
LOOPBACK: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("127.0.0.1/32"),
    ipaddress.ip_network("::1/128"),
)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def parse_networks(raw: str) -> tuple[IPNetwork, ...]:
    """Comma-separated addresses or CIDR networks (IPv4 or IPv6) as networks; ValueError naming
    the first entry that is neither (a network with host bits set, such as 10.0.0.1/8, too)."""
    networks: list[IPNetwork] = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=True))
        except ValueError as exc:
            raise ValueError(f"{item!r} is not an IP address or network ({exc})") from None
    return tuple(networks)


def _address(entry: str) -> IPAddress | None:
    """An X-Forwarded-For entry's address: ``1.2.3.4``, ``1.2.3.4:5678``, ``::1``,
    ``[::1]:5678``; None for anything else (``unknown``, an obfuscated name, garbage)."""
    entry = entry.strip()
    if entry.startswith("["):
        entry = entry[1 : entry.find("]")] if "]" in entry else ""
    elif entry.count(":") == 1:
        entry = entry.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(entry)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_trusted(host: str, trusted: Iterable[IPNetwork]) -> bool:
    """Whether ``host`` (a socket peer or forwarded entry) is one of the ``trusted`` networks."""
    address = _address(host)
    return address is not None and any(address in network for network in trusted)


def forwarded_client(peer: str, forwarded_for: str, trusted: tuple[IPNetwork, ...]) -> str:
    """The client's address for a request from ``peer`` carrying ``forwarded_for`` (the
    X-Forwarded-For values joined with commas).

    ``peer`` itself unless it is trusted. Otherwise the entries are read right to left, past
    trusted proxies, and the first other entry is the client. An entry that is no address
    stops the walk at the last trusted hop (no forged or garbled entry is ever the client);
    when every entry is trusted the client is the left-most of them."""
    if not is_trusted(peer, trusted):
        return peer
    client = peer
    for entry in reversed([e for e in forwarded_for.split(",") if e.strip()]):
        address = _address(entry)
        if address is None:
            return client
        client = str(address)
        if not any(address in network for network in trusted):
            return client
    return client


def _header(scope: Scope, name: bytes) -> str:
    values = [v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == name]
    return ",".join(values)


class ForwardedHeaders:
    """ASGI middleware: ``scope["client"]`` and ``scope["scheme"]`` as the proxies report them,
    believed only when the socket's peer is in ``trusted`` (see :func:`forwarded_client`)."""

    def __init__(self, app: ASGIApp, trusted: tuple[IPNetwork, ...] = LOOPBACK) -> None:
        self.app = app
        self.trusted = trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            peer = str(client[0]) if client else ""
            if self.trusted and is_trusted(peer, self.trusted):
                scope = dict(scope)
                forwarded_for = _header(scope, b"x-forwarded-for")
                if forwarded_for:
                    host = forwarded_client(peer, forwarded_for, self.trusted)
                    if host != peer:
                        scope["client"] = (host, 0)
                proto = _header(scope, b"x-forwarded-proto").split(",")[-1].strip().lower()
                if proto in ("http", "https"):
                    websocket = scope["type"] == "websocket"
                    scope["scheme"] = proto.replace("http", "ws") if websocket else proto
        await self.app(scope, receive, send)
