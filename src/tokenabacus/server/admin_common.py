"""What every /admin router shares: the caller's identity as a dependency, and one report in the
format asked for (JSON, or a CSV or Excel file built by the CLI's export code)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Depends, Request
from fastapi.responses import JSONResponse, Response

from tokenabacus.billing.exports import Sheet, csv_text, xlsx_bytes
from tokenabacus.governance.keys import Identity

Format = Literal["json", "csv", "xlsx"]
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def caller(request: Request) -> Identity:
    return request.state.identity  # set by the admin app's authentication middleware


Caller = Annotated[Identity, Depends(caller)]


def export(rows: list[dict], columns: list[str], fmt: Format, name: str, title: str, body: object) -> Response:
    """One report in the asked format: ``body`` as JSON, or the rows as a CSV or workbook file."""
    if fmt == "csv":
        return Response(
            csv_text(rows, columns).encode("utf-8"),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{name}.csv"'},
        )
    if fmt == "xlsx":
        return Response(
            xlsx_bytes([Sheet(name, columns, rows, [title])], title),
            media_type=XLSX,
            headers={"content-disposition": f'attachment; filename="{name}.xlsx"'},
        )
    return JSONResponse(body)
