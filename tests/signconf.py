"""Helpers shared by signing tests: write a config, get a Context; a fake clock."""

from __future__ import annotations

import os
import pwd
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from flux_imp.sign import DISABLE_PATH_PARANOIA, Context
from flux_imp.sign.ca import CA
from flux_imp.sign.cert import Cert

from . import impenv

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"
NOW = 1_700_000_000


def sign_table(default: str, allowed: Sequence[str] = (), max_ttl: int = 30) -> str:
    """A [sign] table: ``default`` and ``allowed`` mechanisms (default: only it)."""
    return impenv.toml_table("sign", {"max-ttl": max_ttl, "default-type": default,
                                      "allowed-types": list(allowed or [default])})  # fmt: skip


NONE_ONLY = sign_table("none")


def make_context(tmp: Path, toml: str, name: str = "sign.toml") -> Context:
    """Write ``toml`` under ``tmp/conf.d`` and configure a Context on it."""
    confdir = tmp / "conf.d"
    confdir.mkdir(exist_ok=True)
    (confdir / name).write_text(toml)
    ctx = Context(DISABLE_PATH_PARANOIA)
    ctx.configure(str(confdir / "*.toml"))
    return ctx


def ca_table(root: Path, **changes: Any) -> dict[str, Any]:
    """A [ca] table, its cert at ``root``/ca and revocations in
    ``root``/revoke.d; ``changes`` replace values (None: leave the key out)."""
    table: dict[str, Any] = {
        "max-cert-ttl": 60, "max-sign-ttl": 30, "cert-path": str(root / "ca"),
        "revoke-dir": str(root / "revoke.d"), "revoke-allow": True, "domain": "FLUX.TEST",
        **changes,
    }  # fmt: skip
    return {key: value for key, value in table.items() if value is not None}


def ca_mode(where: Path, user: pwd.struct_passwd, revoked: bool = False,
            **changes: Any) -> str:
    """A CA under ``where`` (``ca_table(where, **changes)``) and ``user``'s
    cert, signed by it for ``user``'s uid, at ``where``/guest/sig
    (``user``'s): the [sign.curve] (require-ca, cert-path) and [ca] tables
    of that set-up.  ``revoked``: the cert is revoked in a 0700 revoke-dir
    (only root sees it; else empty and 0755)."""
    table = ca_table(where, **changes)
    authority = CA(table)
    authority.keygen()
    old = os.umask(0o022)
    try:
        authority.store()  # ca (0600) and ca.pub (0644)
    finally:
        os.umask(old)
    revoke_dir = Path(table["revoke-dir"])
    revoke_dir.mkdir(mode=0o700 if revoked else 0o755)
    user_dir = where / "guest"
    user_dir.mkdir(mode=0o755)
    cert = Cert.create()
    authority.sign(cert, 0, user.pw_uid)
    cert.store(str(user_dir / "sig"))
    for path in (user_dir, user_dir / "sig", user_dir / "sig.pub"):
        os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)
    if revoked:
        (revoke_dir / str(cert.meta.get_str("uuid"))).touch()
    return (f'[sign.curve]\nrequire-ca = true\ncert-path = "{user_dir}/sig"\n'
            + impenv.toml_table("ca", table))


class Clock:
    """Stands in for the ``time`` module of the signing modules."""

    def __init__(self, now: int) -> None:
        self.now = now

    def time(self) -> float:
        return self.now + 0.5


def fake_clock(monkeypatch: pytest.MonkeyPatch, *modules: ModuleType) -> Clock:
    """A Clock at NOW, as the ``time`` of each of ``modules`` (for the test)."""
    fake = Clock(NOW)
    for module in modules:
        monkeypatch.setattr(module, "time", fake)
    return fake
