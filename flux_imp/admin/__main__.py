"""``python3 -m flux_imp.admin``: the flux-security command."""

from .cli import main

main(prog_name="flux-security")
