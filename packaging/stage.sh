# Sourced by the package builds: stage_tree DEST copies the checkout into
# DEST, so a build never writes to the checkout: what git tracks plus the
# untracked files it does not ignore, or, outside a git checkout, every
# file but build output and caches.
stage_tree() {
    local top dest=$1
    top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
    mkdir -p "$dest"
    # safe.directory: root may build a checkout owned by someone else.
    local git=(git -c safe.directory="$top" -C "$top")
    if [ "$("${git[@]}" rev-parse --show-toplevel 2>/dev/null)" = "$top" ]; then
        # ls-files also names tracked files deleted in the work tree: skip them.
        "${git[@]}" ls-files -z --cached --others --exclude-standard \
            | (cd "$top" && while IFS= read -r -d '' f; do
                   if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
               done | tar --null --no-recursion -T - -cf -) \
            | tar -C "$dest" -xf -
    else
        echo "stage.sh: $top is not a git checkout: staging every file" >&2
        # tar does not read .gitignore's dir/ patterns: a stale build/lib
        # would end up in the wheel.
        (cd "$top" && tar --exclude-vcs --exclude=build --exclude=dist \
            --exclude='*.egg-info' --exclude=__pycache__ --exclude=.mypy_cache \
            --exclude=.ruff_cache --exclude=.pytest_cache --exclude=.hypothesis \
            --exclude=.venv -cf - .) | tar -C "$dest" -xf -
    fi
    # A checkout made under umask 077 must not give the package unreadable files.
    chmod -R u+rwX,go+rX,go-w "$dest"
}
