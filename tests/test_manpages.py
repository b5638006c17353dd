"""The man pages: every page renders without a groff warning, and the
configuration pages document every key the code reads, with its type.

The key lists come from the code (the IMP's lint table, the signing
library's option tables), so a key added there without documentation
fails here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from flux_imp.imp import impconfig
from flux_imp.sign import ca, curve, munge, token

MAN = Path(__file__).resolve().parents[1] / "man"
PAGES = sorted(p for p in MAN.iterdir() if p.is_file())

# cf type names (flux_imp.conf.typeof) as the pages spell them.
TYPE_WORDS = {"bool": "bool", "string": "string", "array": "array", "table": "table",
              "int64": "integer"}  # fmt: skip


def _groff() -> str:
    groff = shutil.which("groff")
    if groff is None:
        pytest.skip("groff is not installed (apt-get install groff-base)")
    return groff


def render(page: Path) -> str:
    """``page`` as plain ASCII text, without bold/underline overstrikes, on
    lines long enough that no name is hyphenated."""
    result = subprocess.run([_groff(), "-man", "-Tascii", "-P-cbou", "-rLL=1000n", str(page)],
                            capture_output=True, text=True, check=True)
    return result.stdout


def section(text: str, name: str) -> str:
    """The body of the section headed ``name`` (up to the next heading)."""
    match = re.search(rf"^{re.escape(name)}\n(.*?)(?=^[A-Z][A-Z -]+\n|\Z)", text, re.M | re.S)
    assert match, f"no section {name}"
    return match.group(1)


def documented_type(text: str, key: str) -> str | None:
    """The type a tagged paragraph ``key`` starts with: ``(TYPE...``."""
    # A tag narrower than the indent has its body on the same line.
    match = re.search(rf"^ +{re.escape(key)}(?: +|\n +)\(([a-z]+)", text, re.M)
    return match.group(1) if match else None


def test_pages_found() -> None:
    names = {p.name for p in PAGES}
    assert {"flux-imp.8", "flux-sign.1", "flux-config-security.5",
            "flux-config-security-imp.5", "flux-config-security-sign.5"} <= names  # fmt: skip


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_renders_without_warnings(page: Path) -> None:
    result = subprocess.run([_groff(), "-ww", "-z", "-man", str(page)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert result.stderr == ""
    assert result.stdout == ""


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_man_reads_page(page: Path) -> None:
    man = shutil.which("man")
    if man is None:
        pytest.skip("man is not installed (apt-get install man-db)")
    result = subprocess.run([man, "-l", str(page)], capture_output=True, check=False,
                            env={"PATH": "/usr/bin:/bin", "MANPAGER": "cat", "PAGER": "cat"})
    assert result.returncode == 0, result.stderr
    assert result.stdout


def _imp_key(schema_key: str, kind: str) -> str:
    """A lint-table key as flux-config-security-imp(5) tags it."""
    key = schema_key.replace("*", "NAME")
    return f"[{key}]" if kind == "table" else key


IMP_KEYS = sorted(impconfig._SCHEMA.items())


@pytest.mark.parametrize(("key", "kind"), IMP_KEYS, ids=[k for k, _ in IMP_KEYS])
def test_imp_page_documents_every_linted_key(key: str, kind: str) -> None:
    keys = section(render(MAN / "flux-config-security-imp.5"), "KEYS")
    assert documented_type(keys, _imp_key(key, kind)) == TYPE_WORDS[kind]


def _sign_keys() -> list[tuple[str, str]]:
    """Every key the signing library checks, as flux-config-security-sign(5) tags it."""
    tables = [("sign", token._SIGN_OPTS), ("sign.munge", munge._OPTS),
              ("sign.curve", curve._OPTS), ("ca", ca._OPTS)]  # fmt: skip
    keys = []
    for prefix, options in tables:
        keys.append((f"[{prefix}]", "table"))
        keys.extend((f"{prefix}.{opt.key}", opt.type) for opt in options)
    return keys


SIGN_KEYS = _sign_keys()


@pytest.mark.parametrize(("key", "kind"), SIGN_KEYS, ids=[k for k, _ in SIGN_KEYS])
def test_sign_page_documents_every_checked_key(key: str, kind: str) -> None:
    text = render(MAN / "flux-config-security-sign.5")
    body = section(text, "CERTIFICATE AUTHORITY" if key.startswith(("ca.", "[ca]")) else "KEYS")
    assert documented_type(body, key) == TYPE_WORDS[kind]


@pytest.mark.parametrize("key", ["enable-path-paranoia", "disable-path-paranoia"])
def test_overview_documents_path_paranoia_keys(key: str) -> None:
    body = section(render(MAN / "flux-config-security.5"), "PATH CHECKS")
    assert documented_type(body, key) == "bool"


@pytest.mark.parametrize("page", ["flux-imp.8", "flux-sign.1"])
def test_commands_point_at_the_config_pages(page: str) -> None:
    see_also = section(render(MAN / page), "SEE ALSO")
    for name in ("flux-config-security(5)", "flux-config-security-imp(5)",
                 "flux-config-security-sign(5)"):
        assert name in see_also


def test_flux_sign_exit_status_lists_0_1_2() -> None:
    body = section(render(MAN / "flux-sign.1"), "EXIT STATUS")
    assert re.findall(r"^ +(\d+) ", body, re.M) == ["0", "1", "2"]
