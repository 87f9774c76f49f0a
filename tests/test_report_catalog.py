"""A named report is one catalog entry: from it come a `tokenabacus report NAME` command and a
`GET /admin/reports/NAME` route with the same parameters, each surface wording errors its own way."""

from __future__ import annotations

from types import SimpleNamespace

import typer
from fastapi import FastAPI
from typer.testing import CliRunner

from tokenabacus.billing.arguments import Arg, ArgumentError, as_option, as_query, message
from tokenabacus.billing.catalog import REPORTS, NamedReport, Param
from tokenabacus.cli.report import command_for
from tokenabacus.server import admin_reports

ENTRY = NamedReport(
    "busiest",
    "The busiest callers",
    "The busiest callers (default: today).",
    lambda src, win, f, a: None,  # type: ignore[arg-type,return-value]
    (
        Param("min_calls", int, 3, "At least this many calls.", ge=1, le=50),
        Param("order", str, "calls", "Order by calls or tokens.", ("calls", "tokens")),
        Param("only_new", bool, False, "Only callers first seen in the window."),
    ),
    period="today",
    formats=("table", "csv"),
)


def test_the_cli_command_comes_from_the_entry():
    app = typer.Typer()
    app.command("busiest")(command_for(ENTRY))
    app.command("other")(lambda: None)
    out = CliRunner().invoke(app, ["busiest", "--help"], terminal_width=200).output
    for option in ("--min-calls", "--order", "--only-new", "--today", "--since", "--filter", "--tz", "--format"):
        assert option in out
    assert "--no-only-new" not in out and "1<=x<=50" in out and "table or csv." in out
    assert "The busiest callers (default: today)." in out
    bad = CliRunner().invoke(app, ["busiest", "--format", "json"])
    assert bad.exit_code == 2


def test_the_route_comes_from_the_entry():
    app = FastAPI()
    router = admin_reports.report_routes(SimpleNamespace())
    app.include_router(router)
    spec = app.openapi()
    assert {f"/reports/{e.name}" for e in REPORTS} <= set(spec["paths"])
    app = FastAPI()
    app.get("/reports/busiest", summary=ENTRY.summary)(admin_reports._endpoint(SimpleNamespace(), ENTRY))
    op = app.openapi()["paths"]["/reports/busiest"]["get"]
    params = {p["name"]: p["schema"] for p in op["parameters"]}
    assert params["min_calls"]["minimum"] == 1 and params["min_calls"]["maximum"] == 50
    assert params["order"]["enum"] == ["calls", "tokens"] and params["format"]["const"] == "csv"  # one format
    assert {"since", "until", "period", "department", "only_new"} <= set(params)
    assert op["summary"] == "The busiest callers"


def test_errors_are_worded_by_each_surface():
    e = ArgumentError(Arg("min_calls"), " needs ", Arg("only_new"))
    assert str(e) == "`min_calls` needs `only_new`"
    assert message(e, as_option) == "--min-calls needs --only-new"
    assert message(e, as_query) == "min_calls needs only_new"
    assert message(ValueError("--filter 'x': plain"), as_query) == "--filter 'x': plain"
