#!/bin/bash
# make -C packaging rpm: build the flux-imp RPM(s) into packaging/dist/.
#
# Stages a copy of the tree (what git tracks plus untracked files it does not
# ignore; every file but .git and packaging/dist when this is not a git
# checkout) as the Source0 tarball in a temporary rpmbuild top directory,
# runs `rpmbuild -bb --nodeps` on packaging/rpm/flux-imp.spec, copies the
# .rpm(s) to packaging/dist/ and runs rpmlint on them.  Writes nothing else
# in the checkout; removes its temporary directory.  Idempotent.
#
# On a host without Fedora's Python macros (Debian 12), standin.macros and
# pyproject_standin.py supply them, using /usr/bin/python3; the spec itself
# stays what Fedora would build.  Missing build tools are installed with
# apt-get (as root) when available.
set -euo pipefail
umask 022

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../.." && pwd -P)
. "$here/../stage.sh"
dist=$top/packaging/dist
py=/usr/bin/python3
name=flux-imp

say() { echo "rpm/build.sh: $*" >&2; }

# Build tools: rpmbuild and rpmlint, and what the stand-in macros run.
if command -v dpkg-query >/dev/null 2>&1; then
    missing=()
    for p in rpm rpmlint python3 python3-pip python3-setuptools python3-wheel \
             gcc make libc6-dev; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" \
            || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        if [ "$(id -u)" -ne 0 ]; then
            say "missing packages (run as root to install): ${missing[*]}"
            exit 1
        fi
        say "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi
for tool in rpmbuild rpmlint; do
    command -v "$tool" >/dev/null 2>&1 || { say "$tool not found"; exit 1; }
done

# The version comes from pyproject.toml; the spec must agree.
version=$("$py" -I -c 'import sys, tomllib
print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$top/pyproject.toml")
spec_version=$(sed -n 's/^Version:[[:space:]]*//p' "$here/$name.spec")
if [ "$version" != "$spec_version" ]; then
    say "pyproject.toml says version $version, $name.spec says $spec_version"
    exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/$name-rpm.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM HUP
src=$tmp/src/$name-$version
rpmtop=$tmp/rpmbuild
mkdir -p "$src" "$tmp/tmp" "$tmp/cache" "$rpmtop"/{SOURCES,SPECS}

stage_tree "$src"
tar -C "$tmp/src" --owner=0 --group=0 --numeric-owner --sort=name \
    -czf "$rpmtop/SOURCES/$name-$version.tar.gz" "$name-$version"
cp "$src/packaging/rpm/$name.spec" "$rpmtop/SPECS/"

args=(-bb --nodeps --define "_topdir $rpmtop" --define "_tmppath $tmp/tmp")
if [ -z "$(rpm --eval '%{?pyproject_wheel}')" ]; then
    # Stand-ins for what this rpm lacks, with the values Fedora's macros
    # would compute for $py.  Debian's python installs system packages in
    # its deb_system layout (/usr/lib/python3/dist-packages).
    info=$(DEB_PYTHON_INSTALL_LAYOUT=deb "$py" -I -c 'import sys, sysconfig
v = sys.version_info
paths = sysconfig.get_paths(vars={"base": "/usr", "platbase": "/usr"})
print("%d.%d" % v[:2], "%d%d" % v[:2], paths["purelib"], paths["platlib"],
      "-s" + ("P" if hasattr(sys.flags, "safe_path") else ""))')
    read -r pyver pyver_nodots sitelib sitearch shbang_opts <<<"$info"
    while read -r macro value; do
        if [ -z "$(rpm --eval "%{?$macro}")" ]; then
            args+=(--define "$macro $value")
        fi
    done <<EOF
__python3 $py
python3 %{__python3}
python3_version $pyver
python3_version_nodots $pyver_nodots
python3_sitelib $sitelib
python3_sitearch $sitearch
py3_shbang_opts $shbang_opts
EOF
    args+=(--define "_pyproject_standin $src/packaging/rpm/pyproject_standin.py"
           --load "$src/packaging/rpm/standin.macros")
fi

say "rpmbuild ${args[*]} $name.spec"
(
    cd "$tmp"
    # Nothing from the caller's Python or pip set-up (PIP_FIND_LINKS could
    # offer pip another flux-imp wheel) reaches the build.
    unset PYTHONPATH PYTHONHOME PYTHONSTARTUP PYTHONUSERBASE VIRTUAL_ENV
    while read -r v; do unset "$v"; done < <(compgen -e | grep '^PIP_' || true)
    export TMPDIR=$tmp/tmp XDG_CACHE_HOME=$tmp/cache PIP_CONFIG_FILE=/dev/null
    rpmbuild "${args[@]}" "$rpmtop/SPECS/$name.spec"
)

mkdir -p "$dist"
rm -f "$dist/$name"-*.rpm
built=()
while IFS= read -r -d '' f; do
    cp "$f" "$dist/"
    built+=("$dist/$(basename "$f")")
done < <(find "$rpmtop/RPMS" -name '*.rpm' -print0)
[ ${#built[@]} -gt 0 ] || { say "rpmbuild made no .rpm"; exit 1; }
printf '%s\n' "${built[@]}"

say "rpmlint"
rpmlint -r "$here/$name.rpmlintrc" "${built[@]}" >&2
