"""``python3 -m flux_imp.sign`` runs flux-sign."""

from .cli import main

main()
