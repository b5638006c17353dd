"""Code that only the unprivileged child runs, as the caller, after it
dropped privilege for good: each command's unprivileged half, which parses
everything hostile (argv, stdin, the exec helper's output, JSON, options),
and the JSON parser.  The privileged parent never imports it.
"""
