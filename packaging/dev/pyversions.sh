#!/bin/bash
# The tests that need no root-readable interpreter (signing library, config
# layer, pathcheck, flux-sign, munge, and the library-level tests of the IMP's
# modules), run under every CPython 3.9 .. 3.13 this machine has under pyenv:
# the packages target distributions whose Python differs (RHEL 9: 3.9,
# Debian 12: 3.11, Ubuntu 24.04: 3.12, Fedora: 3.13).
#
# As root.  Per minor version, the newest patch release found as
# $PYENV_ROOT/versions/3.N.P/bin/python3 gets an idempotent virtualenv at
# /opt/flux-imp-dev/py3.N with the project's dependencies for that Python
# (python-prctl left out: nothing selected imports it), pytest and hypothesis,
# and the project itself, built afresh (isolated build) from a staged copy of
# the tree on every run.  pyenv interpreters live under /root (0700), so tests
# that run the interpreter as another user (the setuid launcher, its builds,
# the owner and guest test users) are deselected; test.sh runs them on the
# system Python.  Extra arguments go to pytest.  Last line:
#   pyversions: ran 3.9.18 3.10.13 ...; lacked: none
set -uo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
pyenv_root=${PYENV_ROOT:-/root/.pyenv}
prefix=/opt/flux-imp-dev
minors=(9 10 11 12 13)
files=(
    tests/test_kv.py tests/test_token.py tests/test_config.py tests/test_curve.py
    tests/test_cert.py tests/test_ca.py tests/test_pathcheck.py tests/test_cli.py
    tests/test_munge.py tests/test_syslogtrap.py tests/test_cfunc.py tests/test_loader.py
    tests/test_sodium_binding.py tests/test_fs.py
    # Mixed files: only their library-level tests survive the deselection below.
    tests/test_exec.py tests/test_proxy.py tests/test_launcher.py
    tests/test_containment_cgroup.py tests/test_containment_devices.py
)

if [ "$(id -u)" -ne 0 ]; then
    echo "pyversions.sh: must run as root" >&2
    exit 1
fi

scratch=$(mktemp -d /tmp/fluximp-pyversions.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
mkdir "$scratch/plugin"
cat >"$scratch/plugin/fluximp_pyversions.py" <<'EOF'
"""Deselect tests that need an interpreter other users can run: those on the
setuid launcher (imp), on test users who run it (owner, guest), or on a
launcher build (test_launcher's prefix fixture and its make tests)."""

NEEDS = {"imp", "owner", "guest", "prefix"}


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        launcher_build = item.nodeid.startswith("tests/test_launcher.py::test_make_")
        needs = NEEDS.intersection(getattr(item, "fixturenames", ()))
        (drop if needs or launcher_build else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
EOF

# What the selected tests need: the project's run-time requirements for this
# Python (markers included) but python-prctl, and its test extras pytest and
# hypothesis; read from the installed metadata, so pyproject.toml stays the
# one list.
requirements='
import importlib.metadata as md, re
for req in md.requires("flux-imp") or []:
    name = re.match(r"[A-Za-z0-9._-]+", req).group(0).lower().replace("_", "-")
    spec, _, marker = req.partition(";")
    if "extra" in marker:
        if name in ("pytest", "hypothesis"):
            print(spec.strip())
    elif name != "python-prctl":
        print(req.strip())
'

pip_quiet() { "$@" -q --disable-pip-version-check --no-input >"$scratch/pip.log" 2>&1 \
    || { cat "$scratch/pip.log" >&2; return 1; }; }

prepare() {  # prepare VENV PYTHON VERSION
    local venv=$1 python=$2 version=$3 have stage
    have=$("$venv/bin/python" -c 'import platform; print(platform.python_version())' 2>/dev/null)
    if [ "$have" != "$version" ]; then
        rm -rf "$venv"
        mkdir -p "$prefix"
        "$python" -m venv "$venv" || return 1
    fi
    # A fresh copy per Python: the build writes build/ and *.egg-info beside
    # its sources, and must not race or touch the shared tree.
    stage="$scratch/src-$version"
    mkdir "$stage"
    (cd "$top" && tar --exclude=__pycache__ -cf - pyproject.toml README.md flux_imp \
        $(ls -d LICEN[CS]E* COPYING* NOTICE* AUTHORS* 2>/dev/null)) | tar -C "$stage" -xf - \
        || return 1
    pip_quiet "$venv/bin/pip" install --no-deps --force-reinstall "$stage" || return 1
    mapfile -t reqs < <("$venv/bin/python" -c "$requirements") || return 1
    [ ${#reqs[@]} -gt 0 ] || return 1
    # Already satisfied requirements are left alone (no index look-up).
    pip_quiet "$venv/bin/pip" install "${reqs[@]}"
}

ran=() lacked=() failed=() summaries=()
for minor in "${minors[@]}"; do
    python=$(ls -d "$pyenv_root"/versions/3."$minor".*/bin/python3 2>/dev/null \
        | grep -E "/versions/3\.$minor\.[0-9]+/bin/python3\$" | sort -V | tail -n 1)
    if [ -z "$python" ] || [ ! -x "$python" ]; then
        lacked+=("3.$minor")
        continue
    fi
    version=${python#"$pyenv_root/versions/"}
    version=${version%/bin/python3}
    venv="$prefix/py3.$minor"
    echo "pyversions: $version ($venv)" >&2
    ran+=("$version")
    if ! prepare "$venv" "$python" "$version"; then
        echo "pyversions: $version: setting up $venv failed" >&2
        failed+=("$version")
        summaries+=("$version: set-up failed")
        continue
    fi
    (cd "$top" && PYTHONPATH="$scratch/plugin" "$venv/bin/python" -m pytest -q \
        -p no:cacheprovider -p fluximp_pyversions "${files[@]}" "$@") \
        | tee "$scratch/pytest.log"
    status=${PIPESTATUS[0]}
    summaries+=("$version: $(grep -E '[0-9]+ (passed|failed|errors?|skipped|deselected|tests? collected)' "$scratch/pytest.log" \
        | tail -n 1 | sed -E 's/^=+ //; s/ =+$//')")
    [ "$status" -eq 0 ] || failed+=("$version")
done

for line in "${summaries[@]}"; do
    echo "pyversions: $line"
done
[ ${#failed[@]} -eq 0 ] || echo "pyversions: FAILED on ${failed[*]}" >&2
echo "pyversions: ran ${ran[*]:-none}; lacked: ${lacked[*]:-none}"
[ ${#failed[@]} -eq 0 ]
