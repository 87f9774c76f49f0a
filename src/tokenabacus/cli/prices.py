"""`tokenabacus prices ...`: the price book. `set` adds a version (running gateways charge it within
about a second), `list` shows the version in force per model, `history` every version of one.
The config file's ``prices:`` and the versions set here merge (billing/prices.PriceBook)."""

from __future__ import annotations

import getpass
from typing import TYPE_CHECKING, Annotated

import typer

from tokenabacus.cli.common import ConfigOpt, DataDirOpt, open_store, settings_for
from tokenabacus.cli.output import Fmt, emit, fail, iso

if TYPE_CHECKING:
    from datetime import tzinfo

    from tokenabacus.billing.prices import PriceBook
    from tokenabacus.config import Settings
    from tokenabacus.ledger.store import Store

TABLE_COLS = ["model", "version_id", "from", "input", "cached", "output", "per", "currency", "source"]
MICRO_COLS = ["input_per_mtok_micros", "cached_per_mtok_micros", "output_per_mtok_micros"]
PER_HELP = "Prices are per 1k or per 1M tokens."

FmtOpt = Annotated[Fmt, typer.Option("--format", help="table, json or csv.")]
TzOpt = Annotated[
    str | None, typer.Option("--tz", help="Time zone for times given and shown (default governance.timezone).")
]
ShowPerOpt = Annotated[str, typer.Option("--per", help="Show prices per 1k or per 1M tokens.")]


def register(app: typer.Typer) -> None:
    prices = typer.Typer(
        help="The price book: per-model prices for input, cached and output tokens.", no_args_is_help=True
    )
    prices.command("set")(set_)
    prices.command("list")(list_)
    prices.command("history")(history)
    app.add_typer(prices, name="prices")


def who() -> str:
    """Who a change made on this machine is recorded as."""
    try:
        return "cli:" + getpass.getuser()
    except Exception:
        return "cli"


def zone_of(s: Settings, tz: str | None) -> tzinfo:
    from tokenabacus.calendar import zone_named

    try:
        return zone_named(tz) if tz else s.zone
    except ValueError as e:
        fail(str(e))


def book_of(store: Store, s: Settings) -> PriceBook:
    """The book a gateway with these settings charges from: config versions merged with the ledger's."""
    from tokenabacus.billing.estimate import price_book

    return price_book(s, store)


def shown(row: dict, per: str, zone: tzinfo) -> dict:
    """A version row with its prices per ``per`` in its currency and its start as a time."""
    from tokenabacus.money import format_rate, per_label

    cur = row["currency"]
    return {
        **row,
        "from": iso(row["effective_from"], zone) if row["effective_from"] else "always",
        "input": format_rate(row["input_per_mtok_micros"], per, cur),
        "cached": format_rate(row["cached_per_mtok_micros"], per, cur),
        "output": format_rate(row["output_per_mtok_micros"], per, cur),
        "per": per_label(per),
        "created_at": iso(row.get("created_at"), zone),
    }


def _cols(fmt: Fmt, extra: list[str]) -> list[str]:
    cols = TABLE_COLS + extra
    if fmt != Fmt.table:  # JSON and CSV also give the exact figures
        cols += ["effective_from", *MICRO_COLS, "created_at", "created_by", "note"]
    return list(dict.fromkeys(cols))


def _check_per(per: str) -> str:
    from tokenabacus.money import per_label

    try:
        return per_label(per)
    except ValueError as e:
        fail(str(e))


def set_(
    model: Annotated[str, typer.Argument(help="The model's public name (as clients ask for it).")],
    input_: Annotated[str, typer.Option("--input", help="Price of input (prompt) tokens.")],
    output: Annotated[str, typer.Option("--output", help="Price of output (completion) tokens.")],
    per: Annotated[str, typer.Option("--per", help=PER_HELP)],
    cached: Annotated[
        str | None, typer.Option("--cached", help="Price of cached input tokens (default: the input price).")
    ] = None,
    currency: Annotated[str, typer.Option("--currency", help="ISO 4217 code.")] = "CNY",
    from_: Annotated[
        str | None, typer.Option("--from", help="In force from (2026-11-01[T08:00]; default now).")
    ] = None,
    note: Annotated[str | None, typer.Option("--note", help="Kept with the version.")] = None,
    tz: TzOpt = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Set a model's price from a time on (a new version: earlier records keep their cost)."""
    from tokenabacus import calendar, money
    from tokenabacus.calendar import now_ms

    s = settings_for(config, data_dir)
    zone = zone_of(s, tz)
    if not model.strip() or len(model) > 200:
        fail("the model name must be 1 to 200 characters long")
    try:
        inp = money.parse_price(input_, per, "--input")
        out = money.parse_price(output, per, "--output")
        cache = None if cached is None else money.parse_price(cached, per, "--cached")
        cur = money.check_currency(currency)
        start = calendar.parse_time(from_, zone, "--from") if from_ else now_ms()
    except ValueError as e:
        fail(str(e))
    row = open_store(config, data_dir, s).prices.add(model, cur, inp, cache, out, start, who(), note)
    v = shown(row, per, zone)
    cached_text = f", cached {v['cached']}" if cache is not None else ""
    typer.echo(
        f"{row['version_id']}: {model} from {v['from']}: input {v['input']}{cached_text}, "
        f"output {v['output']} per {v['per']} tokens"
    )


def list_(
    at: Annotated[str | None, typer.Option("--at", help="The versions in force at this time (default now).")] = None,
    per: ShowPerOpt = "1M",
    tz: TzOpt = None,
    fmt: FmtOpt = Fmt.table,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """The price version in force per model: the config file's and those set at run time."""
    from tokenabacus.calendar import now_ms, parse_time

    s = settings_for(config, data_dir)
    zone = zone_of(s, tz)
    per = _check_per(per)
    try:
        at_ms = parse_time(at, zone, "--at") if at else now_ms()
    except ValueError as e:
        fail(str(e))
    book = book_of(open_store(config, data_dir, s), s)
    rows = [shown(v.row(), per, zone) for v in book.in_force(at_ms)]
    emit(rows, _cols(fmt, []), fmt, title=f"Prices per {per} tokens in force at {iso(at_ms, zone)}")


def history(
    model: str,
    per: ShowPerOpt = "1M",
    tz: TzOpt = None,
    fmt: FmtOpt = Fmt.table,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Every price version of a model, oldest first: charging, past, future, or replaced (by a
    version set at run time with the same start)."""
    from tokenabacus.calendar import now_ms

    s = settings_for(config, data_dir)
    zone = zone_of(s, tz)
    per = _check_per(per)
    rows = [shown(r, per, zone) for r in book_of(open_store(config, data_dir, s), s).history_rows(model, now_ms())]
    if not rows:
        fail(f"no prices for model {model!r} (see `tokenabacus prices list`)")
    emit(rows, _cols(fmt, ["state", "created_by"]), fmt, title=f"Price history of {model} per {per} tokens")
