"""flux-imp: a Python drop-in for flux-security's IMP and signing library.

Start an audit at ``PRIVILEGED_MODULES``: every project module whose code
runs with euid 0, in the privileged parent or in the job's process before
it drops privilege.  Everything else (the flux-sign CLI, and the
unprivileged child's parsing of argv, stdin and the exec helper's output)
runs without privilege.  tests/test_privileged_modules.py runs every
command through the setuid launcher and keeps this list exact.
"""

__version__ = "0.15.0"

# Code that runs with euid 0, roughly in the order a request meets it.
PRIVILEGED_MODULES: tuple[str, ...] = (
    "packaging/launcher/flux-imp.c",  # the setuid entry point (C)
    "flux_imp",  # this file
    "flux_imp.paths",
    "flux_imp.imp",
    "flux_imp.imp.main",  # start-up and dispatch
    "flux_imp.imp.launch",  # reads the launcher's data
    "flux_imp.imp.log",
    "flux_imp.imp.environ",
    "flux_imp.imp.impconfig",  # IMP config, loaded as root
    "flux_imp.conf",
    "flux_imp.conf.errors",
    "flux_imp.text",
    "flux_imp.conf.tomltk",
    "flux_imp.conf.cglob",
    "flux_imp.conf.pathcheck",
    "flux_imp.imp.cgroup",
    "flux_imp.imp.creds",  # the only set*id/initgroups calls
    "flux_imp.imp.privsep",  # the one channel from the unprivileged child
    "flux_imp.imp.state",
    "flux_imp.imp.commands",
    "flux_imp.imp.audit",
    "flux_imp.imp.whoami",  # parent half
    "flux_imp.imp.exec",  # parent half: re-validates, then spawns
    "flux_imp.imp.options",  # decodes the child's device policy and limits
    "flux_imp.imp.run",  # parent half: re-validates, runs NAME as root
    "flux_imp.imp.casign",  # parent half: loads the CA secret, signs
    "flux_imp.imp.helper",  # execvp() of the job shell (the helper runs unprivileged)
    "flux_imp.imp.containment",  # exec: what is put around the job shell
    "flux_imp.imp.pam",  # libpam session, as root
    "flux_imp.imp.jobcgroup",  # creates, fills and removes the job's cgroup
    "flux_imp.imp.devices",  # device rules
    "flux_imp.imp.bpf",  # loads and attaches the device program
    "flux_imp.imp.namespaces",  # private /tmp: unshare and mount
    "flux_imp.imp.proxy",  # lingers: signals, wait, exit status
    "flux_imp.imp.sdnotify",
    "flux_imp.sign",  # J is verified again by the parent; casign signs
    "flux_imp.sign.kv",  # also the privsep message
    "flux_imp.sign.errors",
    "flux_imp.sign.context",
    "flux_imp.sign.token",
    "flux_imp.sign.b64",
    "flux_imp.sign.munge",
    "flux_imp.sign.none",
    "flux_imp.sign.curve",
    "flux_imp.sign.ca",
    "flux_imp.sign.cert",
    "flux_imp.sign.timestamp",
)
