# Sourced by the package builds: stage_tree DEST copies the checkout (what
# git tracks, plus untracked files it does not ignore; every file when this
# is not a git checkout) into DEST, so a build never writes to the checkout.
stage_tree() {
    local top dest=$1
    top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    mkdir -p "$dest"
    if git -C "$top" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        # ls-files also names tracked files deleted in the work tree: skip them.
        (cd "$top" && git ls-files -z --cached --others --exclude-standard \
            | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
            | tar --null -T - -cf -) | tar -C "$dest" -xf -
    else
        (cd "$top" && tar --exclude=./packaging/dist -cf - .) | tar -C "$dest" -xf -
    fi
}
