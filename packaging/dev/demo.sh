#!/bin/bash
# The README's first command: set up, then run the main job end to end.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
venv=$(bash "$top/packaging/dev/setup.sh" | tail -n 1)
cd "$top"
exec "$venv/bin/python" -m packaging.dev.demo
