#!/bin/bash
# Idempotent developer/CI set-up on Debian 12, as root: system packages,
# a virtualenv built on Debian's /usr/bin/python3 in a world-readable prefix
# (owners and sudo must be able to run the interpreter the IMP starts), and
# the project installed into it.  Prints the venv path on its last line.
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
venv=${FLUX_IMP_VENV:-/opt/flux-imp-dev/venv}
pkgs=(python3 python3-venv python3-dev gcc make libcap-dev libsodium23
      munge libmunge2 procps passwd util-linux
      libpam0g libpam-modules  # PAM sessions; pam_limits/deny/exec for tests
      # The .deb: its build (make -C packaging deb), its check, and what it
      # depends on, so installing it needs no further download.
      debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools
      lintian python3-nacl python3-click python3-prctl groff-base man-db
      libpam-wrapper)  # test builds drive PAM stacks through pam_wrapper, as upstream

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: must run as root" >&2
    exit 1
fi

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" \
        || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup.sh: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x "$venv/bin/python" ]; then
    mkdir -p "$(dirname "$venv")"
    /usr/bin/python3 -m venv "$venv"
fi
# A quiet, offline-tolerant install: reinstalls the project every time so the
# venv always holds the tree being tested.
"$venv/bin/pip" install -q --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
"$venv/bin/pip" install -q --disable-pip-version-check "$top[test]"
chmod -R a+rX "$(dirname "$venv")"
echo "$venv"
