"""The test-only switches: what each reads from the environment, and that unset means inert."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from thumbd import testhooks


def test_resolve_overrides_read_names_case_blind_and_skip_empty_items(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "THUMBD_TEST_RESOLVE", " A.example = 127.0.0.1 ;;b.example=;c.example=::1, 127.0.0.3"
    )
    assert testhooks.resolve_overrides() == {
        "a.example": ["127.0.0.1"],
        "c.example": ["::1", "127.0.0.3"],
    }
    monkeypatch.delenv("THUMBD_TEST_RESOLVE")
    assert testhooks.resolve_overrides() == {}


def test_public_addresses_are_parsed_and_empty_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THUMBD_TEST_PUBLIC", "127.0.0.2, ::1,")
    assert testhooks.public_addresses() == {
        ipaddress.ip_address("127.0.0.2"),
        ipaddress.ip_address("::1"),
    }
    monkeypatch.delenv("THUMBD_TEST_PUBLIC")
    assert testhooks.public_addresses() == frozenset()


def test_boot_id_and_hooks_are_none_and_off_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("THUMBD_TEST_BOOT_ID", raising=False)
    monkeypatch.delenv("THUMBD_TEST_HOOKS", raising=False)
    assert testhooks.boot_id() is None and not testhooks.hooks_enabled()
    monkeypatch.setenv("THUMBD_TEST_BOOT_ID", "")
    monkeypatch.setenv("THUMBD_TEST_HOOKS", "yes")  # only "1" turns them on
    assert testhooks.boot_id() is None and not testhooks.hooks_enabled()
    monkeypatch.setenv("THUMBD_TEST_BOOT_ID", "boot-7")
    monkeypatch.setenv("THUMBD_TEST_HOOKS", "1")
    assert testhooks.boot_id() == "boot-7" and testhooks.hooks_enabled()


def test_importing_testhooks_imports_no_pillow() -> None:
    # Workers and `thumbd status` import it: it must stay standard library only.
    r = subprocess.run(
        [sys.executable, "-c", "import sys, thumbd.testhooks; print('PIL' in sys.modules)"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert r.stdout.strip() == "False"
