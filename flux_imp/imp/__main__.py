"""``python3 -m flux_imp.imp``: the IMP without the launcher (never privileged
by itself; the installed entry point is the setuid launcher)."""

from .main import main

main(test_build=0)
