#!/bin/bash
# The whole test suite, from a fresh Debian 12 machine, as root: set up
# (idempotent), then lint, type-check and run pytest, then the library
# tests under each CPython 3.9..3.13 the machine has.  Tests start their own
# munged and create their own users.
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
venv=$(bash "$top/packaging/dev/setup.sh" | tail -n 1)
cd "$top"
"$venv/bin/ruff" check .
"$venv/bin/mypy"
"$venv/bin/python" -m pytest "$@"
# The library tests again under each CPython 3.9..3.13 the machine has.
bash "$top/packaging/dev/pyversions.sh"
