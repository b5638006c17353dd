"""Containment of a job shell, set up as root before it is forked
(setup.py): PAM session (pam.py), job cgroup and limits (cgroup.py),
device program (bpf.py), private /tmp and /dev/shm (namespaces.py)."""
