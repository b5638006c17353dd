"""Code that only the privileged parent runs (euid 0): each command's
privileged half, and in contain/ what is put around a job shell (PAM
session, job cgroup, device program, private /tmp).

With the shared modules of flux_imp.imp, flux_imp.sign and flux_imp.conf,
this is every line that runs as root (flux_imp.PRIVILEGED_MODULES).
Nothing in flux_imp.imp.unprivileged may import from here.
"""
