"""The flux-security click group; subcommands load lazily by name.

Each subcommand lives in its own module (owned by one engineer) and is
imported only when invoked or listed, so a missing or broken one fails only
then (click's documented LazyGroup pattern).  Exit status: 0 success,
1 an AdminError (one line on stderr), 2 a usage error (click).
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from .. import __version__
from .errors import AdminError

# name -> "module:attribute" of the click command.
SUBCOMMANDS = {
    "config": "flux_imp.admin.config:config",
    "ca": "flux_imp.admin.ca:ca",
    "dry-run": "flux_imp.admin.dryrun:dry_run",
    "check": "flux_imp.admin.check:check",
}


class LazyGroup(click.Group):
    """A group whose commands are imported from ``lazy`` on first use."""

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            return self._load(cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The help lists every subcommand, even one whose module is missing:
        # listing must not fail because one engineer's part is not there.
        rows = []
        for name in self.list_commands(ctx):
            try:
                cmd = self.get_command(ctx, name)
            except AdminError:
                rows.append((name, "(not available)"))
                continue
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(formatter.width - 6 - len(name))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AdminError as exc:
            # One line, whatever the message held, so scripts can grep it.
            text = " ".join(exc.message.splitlines())
            click.echo(f"flux-security: {text}", err=True)
            raise click.exceptions.Exit(exc.code) from exc

    def _load(self, name: str) -> click.Command:
        module_name, attr = self.lazy[name].split(":", 1)
        try:
            cmd = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise AdminError(f"{name}: not available ({exc})") from exc
        if not isinstance(cmd, click.Command):
            raise AdminError(f"{name}: {self.lazy[name]} is not a click command")
        return cmd


# no_args_is_help=False: a bare "flux-security" is a usage error (exit 2),
# as with flux-sign, whatever the click version.
@click.group(cls=LazyGroup, lazy=SUBCOMMANDS, no_args_is_help=False,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="flux-security", message="%(prog)s %(version)s",
                      help="Print the version and exit.")
def main() -> None:
    """Inspect and administer flux-security: configuration, CA, dry runs, checks.

    Needs no setuid bit; run as root it reads everything the IMP reads.
    """
