"""flux-imp: a Python drop-in for flux-security's IMP and signing library.

The tree says who runs what:

* ``flux_imp/imp/privileged/`` (with ``contain/``): only the privileged
  parent runs it, as root;
* ``flux_imp/imp/unprivileged/``: only the unprivileged child runs it, as
  the caller, after it dropped privilege for good;
* everything else both may load: ``flux_imp/imp/*.py`` (start-up, privsep,
  logging, audit, the rules both halves apply), ``flux_imp/conf/`` and
  ``flux_imp/sign/`` (but the flux-sign CLI), ``paths``, ``text`` and
  ``cfunc`` (the few C calls, on ``_ctypes``).

Start an audit at ``PRIVILEGED_MODULES``: every project module whose code
may run with euid 0, derived from that layout (computed on first use, so
no IMP start pays for it).  tests/test_privileged_modules.py runs every
command through the setuid launcher and fails if the privileged parent
loads anything else, if the list names a module root never loads, or if
the unprivileged side loads from the privileged folder.
"""

__version__ = "0.15.0"

# In C, run as root: the setuid entry point (before any module below) and
# the helper that lingers for a running job (after them).
PRIVILEGED_SOURCES = ("packaging/launcher/flux-imp.c", "packaging/launcher/flux-imp-proxy.c")
# Never run as root: the child's folder, what only a user runs, and a
# module that only type checkers read (mech: the mechanisms' Protocol), and
# what the IMP never imports: the flux-security admin tool and flux-core's
# SecurityContext API (sign.security).
_UNPRIVILEGED = ("flux_imp.imp.unprivileged", "flux_imp.sign.cli", "flux_imp.sign.mech",
                 "flux_imp.sign.security", "flux_imp.admin")


def _modules() -> list[str]:
    """Every module of this package, by dotted name."""
    import os

    top = os.path.dirname(os.path.abspath(__file__))
    names = []
    for here, dirs, files in os.walk(top):
        dirs[:] = sorted(d for d in dirs if os.path.exists(os.path.join(here, d, "__init__.py")))
        rel = os.path.relpath(here, top)
        package = "flux_imp" if rel == "." else "flux_imp." + rel.replace(os.sep, ".")
        for name in sorted(files):
            if name.endswith(".py"):
                stem = name[:-3]
                names.append(package if stem == "__init__" else f"{package}.{stem}")
    return names


def _privileged(name: str) -> bool:
    if name.endswith(".__main__"):
        return False  # python -m: run by a user, never by the launcher
    return not any(name == u or name.startswith(u + ".") for u in _UNPRIVILEGED)


def __getattr__(name: str) -> tuple[str, ...]:
    if name == "PRIVILEGED_MODULES":
        return tuple(m for m in _modules() if _privileged(m))
    raise AttributeError(f"module 'flux_imp' has no attribute {name!r}")
