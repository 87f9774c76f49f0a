"""The `tokenabacus` command: the Typer app, assembled from one module per command group."""

from __future__ import annotations

import sys

import typer

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


def create_app() -> typer.Typer:
    app = typer.Typer(
        help="tokenabacus: an OpenAI-compatible LLM gateway with exact token accounting.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
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
    create_app()()


if __name__ == "__main__":
    main()
