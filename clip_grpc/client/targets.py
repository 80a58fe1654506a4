"""Where a channel connects: one target, `dns:///name:port`, or a list of replicas.

gRPC's C core resolves a channel target itself; a list of addresses is one target only in its
static `ipv4:`/`ipv6:` forms. So a list is turned into such a URI: IP literals as they are,
host names resolved once when the channel is opened (each open resolves again). A set of
replicas that changes (pods coming and going) belongs behind one name that resolves to all of
them, `dns:///name:port`, which gRPC re-resolves by itself.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass

# gRPC's resolvers for these schemes take the target as it is.
_GRPC_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")


@dataclass(frozen=True)
class Targets:
    """A parsed target: `addresses` holds "host:port" entries of a list (None for a single
    target that gRPC resolves itself, `single`)."""

    single: str | None
    addresses: tuple[tuple[str, int], ...] = ()
    tls: bool = False

    @property
    def authority(self) -> str | None:
        """The name TLS checks and `:authority` carries for a list: its first host."""
        if self.single is not None:
            return None
        host, port = self.addresses[0]
        return f"{_bracketed(host)}:{port}"

    def channel_target(self) -> str:
        """What to pass to grpc.aio.*_channel (resolves host names of a list now)."""
        if self.single is not None:
            return self.single
        resolved = [_resolve(host, port) for host, port in self.addresses]
        for family, scheme in ((socket.AF_INET, "ipv4"), (socket.AF_INET6, "ipv6")):
            if all(family in by_family for by_family in resolved):
                entries = dict.fromkeys(
                    address for by_family in resolved for address in by_family[family]
                )
                return f"{scheme}:{','.join(entries)}"
        raise ValueError(
            "the targets resolve to both IPv4-only and IPv6-only addresses; gRPC balances over "
            "one family: list addresses of one family or use dns:///name:port"
        )


def parse_targets(target: str | Sequence[str]) -> Targets:
    """`target` is "host:port", "grpc://host:port", "grpcs://host:port" (TLS), a gRPC URI
    ("dns:///name:port", "ipv4:a:p,b:p", "unix:/path"), a comma-separated list of host:port or a
    sequence of them."""
    if isinstance(target, str) and target.strip().startswith(_GRPC_SCHEMES):
        return Targets(single=target.strip())
    entries = [target] if isinstance(target, str) else [str(entry) for entry in target]
    if len(entries) == 1 and entries[0].strip().startswith(_GRPC_SCHEMES):
        return Targets(single=entries[0].strip())
    parts = [part.strip() for entry in entries for part in entry.split(",") if part.strip()]
    if not parts:
        raise ValueError("no server target given")
    schemes = {_scheme_tls(part)[1] for part in parts}
    if len(schemes) > 1:
        raise ValueError(f"mixed grpc:// and grpcs:// targets: {target!r}")
    tls = schemes.pop()
    addresses = [_scheme_tls(part)[0] for part in parts]
    if len(addresses) == 1:
        return Targets(single=addresses[0], tls=tls)
    return Targets(single=None, addresses=tuple(_host_port(a) for a in addresses), tls=tls)


def _scheme_tls(target: str) -> tuple[str, bool]:
    for scheme, tls in (("grpcs://", True), ("grpc://", False)):
        if target.startswith(scheme):
            return target[len(scheme) :], tls
    if target.startswith(_GRPC_SCHEMES):
        raise ValueError(f"a gRPC URI ({target!r}) cannot be part of a list of targets")
    return target, False


def _host_port(address: str) -> tuple[str, int]:
    host, separator, port = address.rpartition(":")
    if not separator or not port.isdigit() or not host:
        raise ValueError(f"a target in a list needs host:port, got {address!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _resolve(host: str, port: int) -> dict[int, list[str]]:
    """Addresses of `host` by family, each as gRPC's static resolvers write it."""
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        found: dict[int, list[str]] = {}
        for family, _, _, _, sockaddr in infos:
            if family in (socket.AF_INET, socket.AF_INET6):
                found.setdefault(family, []).append(f"{_bracketed(sockaddr[0])}:{port}")
        return found
    family = socket.AF_INET if literal.version == 4 else socket.AF_INET6
    return {family: [f"{_bracketed(host)}:{port}"]}


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host
