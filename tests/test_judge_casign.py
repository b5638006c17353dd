"""casign's and whoami's judgements, in process: no setuid launcher, no fork.

``casign_rules.judge`` decides from the decoded cert, the IMP config and
the caller alone, and never reads the CA's secret key; ``carry_out`` does
what the plan says.  Refusals must be the messages, in the order, of
today's single ``ca_create``/``ca_load(secret)``/``ca_sign`` sequence: each
refusal test checks the judgement against the CA library's own error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from flux_imp.imp import audit
from flux_imp.imp.casign_rules import AT_SIGNING, CasignPlan, carry_out, judge
from flux_imp.imp.impconfig import ImpConfig
from flux_imp.imp.log import ImpError
from flux_imp.imp.privileged import whoami
from flux_imp.imp.verdict import Caller, Refusal
from flux_imp.sign import b64
from flux_imp.sign.ca import CA, CAError
from flux_imp.sign.cert import Cert

from .signconf import ca_table

CALLER = Caller(4242, 4343, "alice", 0o022)
ROOT = os.geteuid() == 0


class Notes(audit.Trail):
    """A trail that keeps its decisions in memory (no syslog)."""

    def __init__(self) -> None:
        super().__init__("casign", "test")
        self.decisions: list[tuple[str, dict[str, audit.Value]]] = []

    def decide(self, outcome: str, **fields: audit.Value) -> None:
        self.decisions.append((outcome, {**self.fields, **fields}))


@pytest.fixture
def table(tmp_path: Path) -> dict[str, Any]:
    ca = ca_table(tmp_path, **{"max-cert-ttl": 60, "max-sign-ttl": 30})
    authority = CA(ca)
    authority.keygen()
    authority.store()
    return ca


def config(ca: dict[str, Any] | None) -> ImpConfig:
    return ImpConfig({} if ca is None else {"ca": ca}, None, 0)


def plan_of(ca: dict[str, Any], cert: Cert | None = None) -> CasignPlan:
    verdict = judge(cert or Cert.create(), config(ca), CALLER)
    assert isinstance(verdict, CasignPlan), verdict
    return verdict


def library_error(ca: dict[str, Any]) -> str:
    """What today's sequence (secret key included) says, as casign prints it."""
    authority = CA(ca)
    try:
        authority.load(secret=True)
    except CAError as exc:
        return f"casign: ca_load: {exc.text}"
    try:
        authority.sign(Cert.create(), 0, CALLER.uid)
    except CAError as exc:
        return f"casign: ca_sign: {exc.text}"
    return ""


# -- the plan --------------------------------------------------------------------


def test_plan_says_what_signing_will_do(table: dict[str, Any]) -> None:
    cert = Cert.create()
    plan = plan_of(table, cert)
    authority = CA(table)
    authority.load()
    assert authority.cert is not None
    assert (plan.public_key, plan.signer_uid) == (b64.encode(cert.public_key), CALLER.uid)
    assert (plan.ca_cert_path, plan.ttl, plan.max_sign_ttl, plan.domain) == (
        table["cert-path"], 60, 30, "FLUX.TEST")
    assert plan.issuer == authority.cert.meta.get_str("uuid")
    assert plan.refusal is None
    shown = plan.as_dict()
    assert json.loads(json.dumps(shown)) == shown  # printable as is
    assert shown["sets"] == {"userid": CALLER.uid, "max-sign-ttl": 30, "issuer": plan.issuer,
                             "domain": "FLUX.TEST", "ca-capability": False}  # fmt: skip
    assert shown["decided_at_signing"] == list(AT_SIGNING)
    assert shown["request_metadata"] == {"algorithm": "ed25519"}
    assert plan.public_key in repr(plan) and "refusal=None" in repr(plan)


def test_judge_never_reads_the_secret_key(table: dict[str, Any]) -> None:
    os.unlink(table["cert-path"])  # the secret key: gone
    plan = plan_of(table)
    assert plan.ca.cert is not None and not plan.ca.cert.has_secret
    with pytest.raises(ImpError) as refused:
        carry_out(plan, Notes())
    assert refused.value.message == library_error(table)
    assert refused.value.message.endswith(f"{table['cert-path']}: No such file or directory")


def test_judge_leaves_the_request_unsigned(table: dict[str, Any],
                                           capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    cert = Cert.create()
    before = cert.to_kv().encode()
    plan = plan_of(table, cert)
    notes = Notes()
    carry_out(plan, notes)
    assert cert.to_kv().encode() == before  # carry_out signed a copy
    signed = Cert.loads(capsysbinary.readouterr().out)
    authority = CA(table)
    authority.load()
    assert authority.verify(signed) == (CALLER.uid, 30)
    assert signed.public_key == cert.public_key
    assert notes.decisions == [("allowed", {
        "half": "test", "caller_uid": os.getuid(), "uuid": signed.meta.get_str("uuid"),
        "xtime": signed.meta.get_time("xtime")})]  # fmt: skip


# -- refusals, in upstream's order --------------------------------------------------


def test_no_ca_configuration() -> None:
    assert judge(Cert.create(), config(None), CALLER) == Refusal("casign: no [ca] configuration")


def test_ca_create_error(table: dict[str, Any]) -> None:
    del table["domain"]
    assert judge(Cert.create(), config(table), CALLER) == Refusal(
        "casign: ca_create: 'domain' must be set")


def test_ca_load_error_is_the_librarys(table: dict[str, Any], tmp_path: Path) -> None:
    table["cert-path"] = str(tmp_path / "missing")
    refusal = judge(Cert.create(), config(table), CALLER)
    assert refusal == Refusal(library_error(table))
    assert refusal == Refusal(f"casign: ca_load: {tmp_path}/missing: No such file or directory")


def test_ca_sign_ttl_refusal_is_the_librarys_after_the_key(table: dict[str, Any]) -> None:
    table["max-cert-ttl"] = -1
    plan = plan_of(table)  # the key may yet fail to load: that would win
    assert plan.refusal == Refusal("casign: ca_sign: ttl must be <= -1") == Refusal(
        library_error(table))
    assert plan.as_dict()["refused_after_key_load"] == "casign: ca_sign: ttl must be <= -1"
    with pytest.raises(ImpError) as refused:
        carry_out(plan, Notes())
    assert refused.value.message == plan.refusal.message


def test_key_load_error_wins_over_ca_sign(table: dict[str, Any]) -> None:
    table["max-cert-ttl"] = -1
    Path(table["cert-path"]).write_text("garbage\n")  # the secret key file
    plan = plan_of(table)
    with pytest.raises(ImpError) as refused:
        carry_out(plan, Notes())
    assert refused.value.message == library_error(table)
    assert refused.value.message.startswith("casign: ca_load: ")


def test_ca_cert_without_uuid(table: dict[str, Any]) -> None:
    Cert.create().store(table["cert-path"])  # a key pair, no CA metadata
    plan = plan_of(table)
    assert plan.issuer is None
    assert plan.refusal == Refusal("casign: ca_sign: No such file or directory") == Refusal(
        library_error(table))


@pytest.mark.skipif(not ROOT, reason="the CA files' path checks are root's")
@pytest.mark.parametrize("insecure", [".pub", ""], ids=["public", "secret"])
def test_path_checks_in_the_order_of_ca_load(table: dict[str, Any], insecure: str) -> None:
    # Both files are checked before either is read: an insecure secret key
    # file wins over a public cert that does not parse, as in CA.load(secret).
    path = table["cert-path"]
    Path(path + ".pub").write_text("garbage\n")
    os.chmod(path + insecure, 0o666)
    refusal = judge(Cert.create(), config(table), CALLER)
    assert refusal == Refusal(library_error(table))
    assert refusal == Refusal(f"casign: ca_load: {path}{insecure}: bad file permissions (0666)")


# -- whoami ------------------------------------------------------------------------


def test_whoami_plan_prints_the_ids(capsys: pytest.CaptureFixture[str]) -> None:
    plan = whoami.judge()
    assert plan.as_dict()["prints"] == (
        "flux-imp: privileged: uid=<uid> euid=<euid> gid=<gid> egid=<egid>")
    assert repr(plan) == "WhoamiPlan(prefix='flux-imp: privileged')"
    whoami.carry_out(plan)
    assert capsys.readouterr().out == (
        f"flux-imp: privileged: uid={os.getuid()} euid={os.geteuid()} "
        f"gid={os.getgid()} egid={os.getegid()}\n")
