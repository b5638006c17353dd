"""flux-security: the admin tool over the IMP's and signing library's code.

Not privileged code of the IMP: the IMP never imports this package (see
``flux_imp._UNPRIVILEGED``).  Run as root it reads what the IMP reads; each
subcommand calls the functions the IMP calls, never a copy of a rule.
"""
