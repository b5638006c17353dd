"""The IMP: each command has an unprivileged half (``child``) and, where it
must act with privilege, a privileged half (``parent``).  See
``flux_imp.PRIVILEGED_MODULES`` for every module that runs as root."""
