#!/bin/bash
# make -C packaging deb: build the Debian package(s) from a staged copy of
# the tree and leave them in packaging/dist/.  Installs missing build
# dependencies (as root) on Debian 12.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/stage.sh"

builddeps=(build-essential debhelper dh-python pybuild-plugin-pyproject
           python3-all python3-setuptools gcc make)
missing=()
for p in "${builddeps[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "debian-build.sh: missing build dependencies: ${missing[*]}" >&2
        exit 1
    fi
    echo "debian-build.sh: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$here/../pyproject.toml")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
src="$work/flux-imp-$version"
stage_tree "$src"
cp -a "$here/debian" "$src/debian"
# Debian's own toolchain only: a python3 earlier on PATH (pyenv, a venv)
# must not be the one that builds the package.
(cd "$src" && env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$work" LC_ALL=C.UTF-8 \
    dpkg-buildpackage -us -uc -b) >"$work/build.log" 2>&1 || {
    tail -n 40 "$work/build.log" >&2
    echo "debian-build.sh: dpkg-buildpackage failed" >&2
    exit 1
}
mkdir -p "$here/dist"
rm -f "$here"/dist/flux-imp_*.deb "$here"/dist/flux-imp*.buildinfo "$here"/dist/flux-imp*.changes
cp "$work"/*.deb "$work"/*.changes "$here/dist/"
ls "$here"/dist/*.deb
