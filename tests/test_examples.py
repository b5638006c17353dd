"""The example configurations in packaging/examples (installed under
/usr/share/doc/flux-imp/examples/, sign.toml also as the conffile
/etc/flux/security/conf.d/sign.toml) load with our own loader, lint clean
and configure the signing library, as shipped and with every commented-out
key switched on."""

from __future__ import annotations

import os
import pwd
import re
from pathlib import Path
from typing import Any

import pytest

from flux_imp import conf as cf
from flux_imp.imp import impconfig
from flux_imp.imp.environ import CallerEnv
from flux_imp.imp.log import Log
from flux_imp.imp.privileged.contain import namespaces, pam
from flux_imp.sign import DISABLE_PATH_PARANOIA, Context, unwrap, wrap
from flux_imp.sign.ca import CA
from flux_imp.sign.cert import Cert
from flux_imp.sign.token import lookup_mech, sign_config

from .containment_helpers import make_setup, outcome, start
from .impenv import ImpInstall

EXAMPLES = Path(__file__).resolve().parents[1] / "packaging" / "examples"
TOML = sorted(EXAMPLES.glob("*.toml"))
# What flux-security ships as etc/sign.toml (v0.15.0), and its RPM installs.
UPSTREAM_SIGN = {"max-ttl": 1209600, "default-type": "munge", "allowed-types": ["munge"]}


def uncommented(text: str) -> str:
    """``text`` with every commented-out table header or ``key = value`` line
    switched on (prose comments have a space after the ``#``)."""
    return re.sub(r"^#(?=\[|[A-Za-z0-9_-]+ = )", "", text, flags=re.M)


@pytest.fixture(params=["as shipped", "uncommented"])
def variant(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


def example(name: str, variant: str, tmp_path: Path) -> str:
    """The path of example ``name`` (uncommented into ``tmp_path`` if asked)."""
    path = EXAMPLES / name
    if variant == "as shipped":
        return str(path)
    copy = tmp_path / name
    copy.write_text(uncommented(path.read_text()))
    return str(copy)


def context(path: str) -> Context:
    ctx = Context(DISABLE_PATH_PARANOIA)
    ctx.configure(path)
    return ctx


def test_examples_found() -> None:
    assert {p.name for p in EXAMPLES.iterdir()} == {
        "sign.toml", "sign-curve-ca.toml", "imp.toml", "pam.d-flux"}  # fmt: skip


@pytest.mark.parametrize("name", [p.name for p in TOML])
def test_example_parses(name: str, variant: str, tmp_path: Path) -> None:
    table, count = cf.load_glob(example(name, variant, tmp_path),
                                base={"disable-path-paranoia": True})
    assert count == 1
    assert set(table) > {"disable-path-paranoia"}


def test_uncommenting_switches_keys_on() -> None:
    # Guards the helper: were its pattern wrong, "uncommented" would test nothing new.
    text = (EXAMPLES / "imp.toml").read_text()
    assert "\n[exec.cgroup]\n" in uncommented(text)
    assert "\n[exec.cgroup]\n" not in text


# -- imp.toml ----------------------------------------------------------------


def load_imp(path: str) -> impconfig.ImpConfig:
    """impconfig.load as a test build does it (FLUX_IMP_CONFIG_PATTERN, no path checks)."""
    return impconfig.load(CallerEnv([b"FLUX_IMP_CONFIG_PATTERN=" + os.fsencode(path)]),
                          test_build=True)


def test_imp_example_lints_clean(variant: str, tmp_path: Path,
                                 capfd: pytest.CaptureFixture[str]) -> None:
    conf = load_imp(example("imp.toml", variant, tmp_path))
    assert capfd.readouterr().err == ""
    assert conf.section("exec")["allowed-users"] == ["flux"]
    assert conf.section("exec")["allowed-shells"] == ["/usr/libexec/flux/flux-shell"]
    assert conf.section("exec")["pam-support"] is True


def test_imp_example_commented_values_are_valid(tmp_path: Path,
                                                capfd: pytest.CaptureFixture[str]) -> None:
    conf = load_imp(example("imp.toml", "uncommented", tmp_path))
    assert capfd.readouterr().err == ""
    assert Log().set_level(conf.section("log-level"))
    assert conf.section("allow-sudo") is False
    exec_conf = conf.section("exec")
    assert os.path.isabs(exec_conf["cgroup"]["parent"])
    assert namespaces.SIZE.fullmatch(exec_conf["private-tmp"]["size"])
    assert sorted(conf.section("run")) == ["epilog", "housekeeping", "prolog"]
    for name, table in conf.section("run").items():
        assert table["path"] == f"/usr/libexec/flux/cmd/flux-run-{name}"
        assert table["allowed-users"] == ["flux"]
        assert table["allowed-environment"] == ["FLUX_*"]


# -- sign.toml ---------------------------------------------------------------


def test_sign_example_is_upstreams_default(variant: str, tmp_path: Path) -> None:
    ctx = context(example("sign.toml", variant, tmp_path))
    table = sign_config(ctx)  # the [sign] checks of every wrap and unwrap
    assert {k: table[k] for k in UPSTREAM_SIGN} == UPSTREAM_SIGN


def test_sign_example_signs_and_verifies_with_munge(tmp_path: Path, munged: str) -> None:
    # As shipped but for the socket: the one of our private munged, set
    # through the example's own commented [sign.munge] table.
    text = uncommented((EXAMPLES / "sign.toml").read_text())
    assert '"/run/munge/munge.socket.2"' in text
    (tmp_path / "sign.toml").write_text(text.replace("/run/munge/munge.socket.2", munged))
    ctx = context(str(tmp_path / "sign.toml"))
    token = wrap(ctx, b"jobspec")  # default-type
    result = unwrap(ctx, token)  # allowed-types enforced
    assert (result.mechanism, result.userid, result.payload) == ("munge", os.getuid(),
                                                                 b"jobspec")


# -- sign-curve-ca.toml ------------------------------------------------------


def test_curve_ca_example_options_are_valid(variant: str, tmp_path: Path) -> None:
    ctx = context(example("sign-curve-ca.toml", variant, tmp_path))
    table = sign_config(ctx)
    assert (table["default-type"], table["allowed-types"]) == ("curve", ["curve"])
    curve = lookup_mech("curve")
    assert curve is not None
    curve.init(ctx, table)  # [sign.curve], checked strictly
    assert table["curve"]["require-ca"] is True
    CA(ctx.get_config("ca"))  # [ca], checked strictly: six keys, no others


@pytest.fixture
def ca_files(tmp_path: Path) -> dict[str, Any]:
    """The example's [ca], its files moved under ``tmp_path``: a new CA cert
    there, and a user cert it signed for our uid at ``tmp_path``/u."""
    ctx = context(str(EXAMPLES / "sign-curve-ca.toml"))
    table = dict(ctx.get_config("ca"))
    table["cert-path"] = str(tmp_path / "curve-ca")
    table["revoke-dir"] = str(tmp_path / "revoked")
    authority = CA(table)
    authority.keygen()
    authority.store()
    user = Cert.create()
    authority.sign(user, 0, os.getuid())
    user.store(str(tmp_path / "u"))
    return table


def test_curve_ca_example_signs_and_verifies(tmp_path: Path, ca_files: dict[str, Any]) -> None:
    # The example's settings, but with the CA and the signer's cert where
    # the fixture made them (the example's paths need root-made files).
    ctx = context(str(EXAMPLES / "sign-curve-ca.toml"))
    assert ctx.config is not None
    ctx.config["ca"] = ca_files
    ctx.config["sign"]["curve"]["cert-path"] = str(tmp_path / "u")
    token = wrap(ctx, b"jobspec")
    result = unwrap(ctx, token)
    assert (result.mechanism, result.userid, result.payload) == ("curve", os.getuid(),
                                                                 b"jobspec")


# -- pam.d-flux --------------------------------------------------------------

PAM_TYPES = {"auth", "account", "session", "password"}
PAM_CONTROLS = {"required", "requisite", "sufficient", "optional", "include", "substack"}


def pam_lines(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if line and not line.startswith("#")]


def test_pam_example_is_a_well_formed_stack() -> None:
    lines = pam_lines((EXAMPLES / "pam.d-flux").read_text())
    for fields in lines:
        assert len(fields) >= 3, fields
        assert fields[0] in PAM_TYPES and fields[1] in PAM_CONTROLS, fields
        assert fields[2].startswith("pam_") and fields[2].endswith(".so"), fields
    # flux-imp runs the auth stack's setcred and the session stack only.
    assert {fields[0] for fields in lines} == {"auth", "session"}


def test_pam_example_opens_a_session_for_a_real_job(
    imp: ImpInstall, munged: str, owner: pwd.struct_passwd, guest: pwd.struct_passwd,
    world_tmp: Path,
) -> None:
    # As test_containment_pam: the example bound over /etc/pam.d/flux in
    # the IMP's private mount namespace; the host's PAM files are untouched.
    if pam.load() is None:
        pytest.skip("libpam.so.0 is not installed")
    setup = make_setup(imp.test_build, munged, owner, guest, world_tmp, "pam-support = true\n")
    (world_tmp / "pam.d").mkdir()
    (world_tmp / "pam.d" / "flux").write_text((EXAMPLES / "pam.d-flux").read_text())
    proc = start(setup, "echo ran", world_tmp, binds={str(world_tmp / "pam.d"): "/etc/pam.d"})
    assert outcome(proc) == (0, "ran\n", "")
