"""Which addresses a download may connect to: the guard against server-side request forgery.

thumbd resolves the host itself and refuses loopback, private, link-local (cloud metadata),
multicast, reserved and unspecified addresses, and IPv6 addresses that embed one (unless
`[download] allow_private_addresses`). One bad address refuses the whole name. aiohttp
connects to exactly the addresses the resolver checked here (client.py), so DNS rebinding
cannot swap the address between check and connect, and `refusal` checks every address again at
the moment a socket is made for it: that is what catches IP literals (a redirect to
`http://127.0.0.1/` or `http://[::ffff:127.0.0.1]/` never reaches a resolver).

The tests' overrides (testhooks.resolve_overrides and public_addresses) enter only through
`policy_from_env`, with a warning in the log when set.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable

from thumbd import testhooks
from thumbd.downloads.outcomes import Failure, Stop

log = logging.getLogger("thumbd.download")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def why_not_public(ip: IPAddress) -> str | None:
    """What kind of non-public address `ip` is, or None for a public one."""
    if isinstance(ip, ipaddress.IPv6Address):
        for embedded in (ip.ipv4_mapped, ip.sixtofour, ip.teredo and ip.teredo[1]):
            if embedded:
                kind = why_not_public(embedded)
                if kind is not None:
                    return kind
    checks = (
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (ip.is_unspecified, "unspecified"),
        (ip.is_reserved, "reserved"),
        (ip.is_private, "private"),
    )
    for hit, kind in checks:
        if hit:
            return kind
    return None if ip.is_global else "not globally routable"


class Refused(OSError):
    """An address or name the policy turned down, raised where aiohttp expects network errors
    (its resolver and socket factory), carrying the Failure the fetch reports."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.reason)
        self.failure = failure


class AddressPolicy:
    """Resolves a host and says which of its addresses may be connected to."""

    def __init__(
        self,
        *,
        allow_private: bool,
        resolver: Resolver = system_resolver,
        treat_as_public: frozenset[IPAddress] = frozenset(),
    ) -> None:
        self.allow_private = allow_private
        self.resolver = resolver
        self.treat_as_public = treat_as_public  # test-only (testhooks.public_addresses)

    def addresses(self, host: str, port: int) -> list[IPAddress]:
        """Every address of `host`, all checked; raises Stop with a Failure otherwise."""
        try:
            found = [ipaddress.ip_address(a.split("%", 1)[0]) for a in self.resolver(host, port)]
        except socket.gaierror as e:
            temporary = e.errno in (socket.EAI_AGAIN, getattr(socket, "EAI_SYSTEM", None))
            raise Stop(Failure(f"cannot resolve {host}: {e.strerror}", retry=temporary)) from None
        except (UnicodeError, ValueError) as e:
            raise Stop(Failure(f"cannot resolve {host}: {e}")) from None
        if not found:
            raise Stop(Failure(f"cannot resolve {host}: no addresses"))
        if not self.allow_private:
            for ip in found:  # one bad address refuses the name: it is playing games
                kind = why_not_public(ip) if ip not in self.treat_as_public else None
                if kind is not None:
                    shown = str(ip) if host == str(ip) else f"{host} is {ip}"
                    raise Stop(Failure(f"refused: private address ({shown}, {kind})"))
        return found

    def refusal(self, address: str) -> Failure | None:
        """Why a connection to `address` (an IP, as a socket is about to be made for it) is
        refused, or None."""
        if self.allow_private:
            return None
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        kind = why_not_public(ip) if ip not in self.treat_as_public else None
        return None if kind is None else Failure(f"refused: private address ({ip}, {kind})")


def policy_from_env(allow_private: bool) -> AddressPolicy:
    """The address policy, with the test-only overrides if their variables are set."""
    names = testhooks.resolve_overrides()
    public = testhooks.public_addresses()
    if names or public:
        log.warning(
            "test-only address overrides are set (%s, %s)", testhooks.RESOLVE, testhooks.PUBLIC
        )

    def resolve(host: str, port: int) -> list[str]:
        return names.get(host.lower()) or system_resolver(host, port)

    return AddressPolicy(allow_private=allow_private, resolver=resolve, treat_as_public=public)
