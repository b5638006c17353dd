"""flux-imp: a Python drop-in for flux-security's IMP and signing library.

Privileged code lives only in the modules listed in ``PRIVILEGED_MODULES``;
everything else runs, or can run, without privilege.
"""

__version__ = "0.15.0"

# Modules whose code runs with euid 0 (an auditor starts here).
PRIVILEGED_MODULES: tuple[str, ...] = ()
