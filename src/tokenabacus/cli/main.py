"""The `tokenabacus` command: the Typer app, assembled from one module per command group."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from tokenabacus import __version__
from tokenabacus.cli import (
    alerts,
    audit,
    costs,
    db,
    demo,
    keys,
    models,
    org,
    plan,
    prices,
    quota,
    report,
    serve,
    usage,
)

# Each group is a module with ``register(app)``; a new group (quota, org, prices, alerts, audit)
# is a module of its own, listed here.
GROUPS = (
    serve,
    keys,
    models,
    usage,
    report,
    org,
    quota,
    audit,
    prices,
    costs,
    plan,
    alerts,
    db,
    demo,
)  # costs: hardware


HELP_NAMES = ["-h", "--help"]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tokenabacus {__version__}")
        raise typer.Exit()


def create_app() -> typer.Typer:
    app = typer.Typer(
        help="tokenabacus: an OpenAI-compatible LLM gateway with exact token accounting.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        # Subcommands inherit it: `-h` works everywhere `--help` does.
        context_settings={"help_option_names": HELP_NAMES},
    )

    @app.callback()
    def _main(
        version: Annotated[
            bool,
            typer.Option("--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."),
        ] = False,
    ) -> None:
        """tokenabacus: an OpenAI-compatible LLM gateway with exact token accounting."""

    for group in GROUPS:
        group.register(app)
    return app


def main() -> None:
    # Bytes that are not UTF-8 arrive as lone surrogates no database, file or JSON can hold:
    # one line and exit 2 here, instead of a UnicodeEncodeError wherever the text lands.
    for i, arg in enumerate(sys.argv[1:], start=1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            typer.echo(f"error: argument {i} is not valid UTF-8 text", err=True)
            raise SystemExit(2) from None
    try:
        command()(standalone_mode=True)
    except Exception as e:  # noqa: BLE001 - the last guard: a bug is one line, not a traceback
        if os.environ.get("TOKENABACUS_DEBUG"):
            raise
        text = " ".join(str(e).split())[:300]
        typer.echo(f"error: unexpected {type(e).__name__}: {text} (TOKENABACUS_DEBUG=1 shows where)", err=True)
        raise SystemExit(2) from None


def command() -> Any:
    """The command behind the app, with flags shown without a type: Typer labels every option
    with its type, and ``--json <bool>`` reads as if the flag took a value."""
    cmd = typer.main.get_command(create_app())
    _untype_flags(cmd)
    return cmd


def _untype_flags(cmd: Any) -> None:
    ctx = cmd.context_class(cmd, help_option_names=HELP_NAMES)
    for p in [*cmd.params, cmd.get_help_option(ctx)]:
        if getattr(p, "is_flag", False) and p.metavar is None:
            p.metavar = ""  # an empty label: the help shows no type
    for sub in getattr(cmd, "commands", {}).values():
        _untype_flags(sub)


if __name__ == "__main__":
    main()
