"""downloads.policy: which addresses a download may connect to, and the reasons it reports."""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Any

import pytest

from thumbd.downloads.outcomes import Failure, Stop
from thumbd.downloads.policy import (
    AddressPolicy,
    Refused,
    policy_from_env,
    system_resolver,
    why_not_public,
)


def ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(address)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "not globally routable"),
        ("0.0.0.0", "unspecified"),  # also private: the first kind that fits is named
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),  # also private
        ("::1", "loopback"),
        ("::", "unspecified"),  # also reserved and private
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:8.8.8.8", "reserved"),  # a public IPv4 address mapped: the IPv6 block's kind
        ("2002:7f00:1::", "loopback"),  # 6to4 around 127.0.0.1
        ("2002:a00:1::", "private"),  # 6to4 around 10.0.0.1; 2002::/16 itself is global
        ("2002:808:808::", None),  # 6to4 around 8.8.8.8
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),  # Teredo, client 127.0.0.1
        ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", "private"),  # Teredo, client 8.8.8.8
        ("ff02::1", "multicast"),
        ("8.8.8.8", None),
        ("2606:4700::1111", None),
    ],
)
def test_address_kinds(address: str, kind: str | None) -> None:
    assert why_not_public(ip(address)) == kind


def test_the_system_resolver_asks_for_tcp_and_lists_each_address_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[Any, ...]] = []

    def getaddrinfo(host: str, port: int, **kwargs: Any) -> list[tuple[Any, ...]]:
        calls.append((host, port, kwargs))
        v4 = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", port))
        v6 = (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fe80::1%eth0", port, 0, 2))
        return [v4, v6, v4]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    assert system_resolver("photos.example", 8080) == ["10.0.0.1", "fe80::1%eth0"]
    kwargs = {"type": socket.SOCK_STREAM, "proto": socket.IPPROTO_TCP}
    assert calls == [("photos.example", 8080, kwargs)]


def test_the_system_resolver_resolves_literals() -> None:
    assert system_resolver("127.0.0.1", 80) == ["127.0.0.1"]
    assert system_resolver("::1", 443) == ["::1"]


def stop(policy: AddressPolicy, host: str = "photos.example") -> Failure:
    with pytest.raises(Stop) as e:
        policy.addresses(host, 80)
    assert isinstance(e.value.result, Failure)
    return e.value.result


def resolving(*addresses: str, allow_private: bool = False, **kw: Any) -> AddressPolicy:
    return AddressPolicy(allow_private=allow_private, resolver=lambda h, p: list(addresses), **kw)


def test_every_address_of_a_public_name_is_returned_in_order() -> None:
    policy = resolving("8.8.8.8", "2606:4700::1111", "1.1.1.1")
    assert policy.addresses("photos.example", 80) == [
        ip("8.8.8.8"),
        ip("2606:4700::1111"),
        ip("1.1.1.1"),
    ]


def test_the_resolver_is_asked_for_the_host_and_port() -> None:
    asked: list[tuple[str, int]] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return ["8.8.8.8"]

    AddressPolicy(allow_private=False, resolver=resolver).addresses("photos.example", 8443)
    assert asked == [("photos.example", 8443)]


def test_one_private_address_refuses_the_whole_name() -> None:
    failure = stop(resolving("8.8.8.8", "10.0.0.1"), "mixed.example")
    assert failure == Failure("refused: private address (mixed.example is 10.0.0.1, private)")


def test_an_address_given_as_the_host_is_named_once() -> None:
    failure = stop(resolving("127.0.0.1"), "127.0.0.1")
    assert failure == Failure("refused: private address (127.0.0.1, loopback)")


def test_a_scope_is_dropped_before_the_address_is_checked() -> None:
    assert resolving("fe80::1%eth0", allow_private=True).addresses("h", 80) == [ip("fe80::1")]
    odd = resolving("fe80::1%a%b", allow_private=True)  # the scope is all after the first %
    assert odd.addresses("h", 80) == [ip("fe80::1")]
    failure = stop(resolving("fe80::1%eth0"), "h")
    assert failure == Failure("refused: private address (h is fe80::1, link-local)")


def test_private_addresses_pass_when_allowed() -> None:
    policy = resolving("10.0.0.1", "127.0.0.1", allow_private=True)
    assert policy.addresses("h", 80) == [ip("10.0.0.1"), ip("127.0.0.1")]


def test_addresses_treated_as_public_pass_and_only_those() -> None:
    policy = resolving("127.0.0.2", treat_as_public=frozenset({ip("127.0.0.2")}))
    assert policy.addresses("h", 80) == [ip("127.0.0.2")]
    both = resolving("127.0.0.2", "127.0.0.1", treat_as_public=frozenset({ip("127.0.0.2")}))
    assert stop(both, "h") == Failure("refused: private address (h is 127.0.0.1, loopback)")


def failing(error: Exception) -> AddressPolicy:
    def resolver(host: str, port: int) -> list[str]:
        raise error

    return AddressPolicy(allow_private=False, resolver=resolver)


@pytest.mark.parametrize(
    ("errno", "retry"),
    [
        (socket.EAI_AGAIN, True),  # the DNS server did not answer in time
        (socket.EAI_SYSTEM, True),
        (socket.EAI_NONAME, False),  # no such name: another try says the same
        (socket.EAI_FAIL, False),
    ],
)
def test_a_failed_lookup_is_retried_only_when_it_may_pass(errno: int, retry: bool) -> None:
    failure = stop(failing(socket.gaierror(errno, "the resolver's words")), "photos.example")
    assert failure == Failure("cannot resolve photos.example: the resolver's words", retry=retry)


def test_a_name_that_cannot_be_resolved_is_reported() -> None:
    failure = stop(failing(UnicodeError("label too long")), "x.example")
    assert failure == Failure("cannot resolve x.example: label too long")
    failure = stop(resolving("not-an-address"), "x.example")
    expected = "cannot resolve x.example: 'not-an-address' does not appear to be an IPv4 or IPv6"
    assert failure == Failure(f"{expected} address")
    assert stop(resolving(), "x.example") == Failure("cannot resolve x.example: no addresses")


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("10.0.0.1", "refused: private address (10.0.0.1, private)"),
        ("::ffff:127.0.0.1", "refused: private address (::ffff:7f00:1, loopback)"),
        ("fe80::1%eth0", "refused: private address (fe80::1, link-local)"),
        ("8.8.8.8", None),
        ("127.0.0.2", None),  # treated as public
    ],
)
def test_a_connection_is_refused_to_a_private_address(address: str, reason: str | None) -> None:
    policy = AddressPolicy(allow_private=False, treat_as_public=frozenset({ip("127.0.0.2")}))
    assert policy.refusal(address) == (None if reason is None else Failure(reason))


def test_a_connection_drops_everything_after_the_first_percent_sign() -> None:
    policy = AddressPolicy(allow_private=False)
    assert policy.refusal("fe80::1%a%b") == Failure(
        "refused: private address (fe80::1, link-local)"
    )


def test_no_connection_is_refused_when_private_addresses_are_allowed() -> None:
    policy = AddressPolicy(allow_private=True)
    assert policy.refusal("127.0.0.1") is None
    assert policy.refusal("not even an address") is None


def test_a_refusal_is_an_os_error_carrying_its_failure() -> None:
    failure = Failure("refused: private address (10.0.0.1, private)")
    refused = Refused(failure)
    assert isinstance(refused, OSError)
    assert str(refused) == "refused: private address (10.0.0.1, private)"
    assert refused.failure is failure


WARNING = "test-only address overrides are set (THUMBD_TEST_RESOLVE, THUMBD_TEST_PUBLIC)"


def test_the_test_only_overrides_are_read_and_announced(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("THUMBD_TEST_RESOLVE", "a.example=127.0.0.1;B.example=127.0.0.2,::1")
    monkeypatch.setenv("THUMBD_TEST_PUBLIC", "127.0.0.2")
    with caplog.at_level(logging.WARNING, logger="thumbd.download"):
        policy = policy_from_env(allow_private=False)
    assert caplog.messages == [WARNING]
    assert policy.allow_private is False
    assert policy.resolver("b.example", 80) == ["127.0.0.2", "::1"]
    assert policy.resolver("A.EXAMPLE", 80) == ["127.0.0.1"]
    assert policy.resolver("127.0.0.3", 80) == ["127.0.0.3"]  # other names: the system's
    asked: list[tuple[str, int]] = []
    monkeypatch.setattr(socket, "getaddrinfo", lambda h, p, **kw: asked.append((h, p)) or [])
    assert policy.resolver("other.example", 8443) == []
    assert asked == [("other.example", 8443)]
    assert policy.treat_as_public == frozenset({ip("127.0.0.2")})


@pytest.mark.parametrize(
    ("name", "value"),
    [("THUMBD_TEST_RESOLVE", "a.example=127.0.0.1"), ("THUMBD_TEST_PUBLIC", "::1")],
)
def test_either_override_alone_is_announced(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, name: str, value: str
) -> None:
    monkeypatch.delenv("THUMBD_TEST_RESOLVE", raising=False)
    monkeypatch.delenv("THUMBD_TEST_PUBLIC", raising=False)
    monkeypatch.setenv(name, value)
    with caplog.at_level(logging.WARNING, logger="thumbd.download"):
        policy_from_env(allow_private=True)
    assert caplog.messages == [WARNING]


def test_without_overrides_the_policy_is_the_plain_one(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("THUMBD_TEST_RESOLVE", raising=False)
    monkeypatch.delenv("THUMBD_TEST_PUBLIC", raising=False)
    with caplog.at_level(logging.WARNING, logger="thumbd.download"):
        policy = policy_from_env(allow_private=True)
    assert caplog.messages == []
    assert policy.allow_private is True and policy.treat_as_public == frozenset()
    assert policy.resolver("127.0.0.1", 80) == ["127.0.0.1"]
