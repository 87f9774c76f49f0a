"""The `tokenabacus` command: the Typer app, assembled from one module per command group."""

from __future__ import annotations

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
    create_app()()


if __name__ == "__main__":
    main()
