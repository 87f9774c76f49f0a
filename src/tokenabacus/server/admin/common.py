"""What every /admin router shares: the caller's identity as a dependency, the base of every JSON
body, and one report in the format asked for (JSON, or a CSV or Excel file built by the CLI's
export code)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, field_validator

from tokenabacus.billing.exports import Sheet, csv_text, xlsx_bytes
from tokenabacus.governance.keys import Identity

Format = Literal["json", "csv", "xlsx"]
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def caller(request: Request) -> Identity:
    return request.state.identity  # set by the admin app's authentication middleware


Caller = Annotated[Identity, Depends(caller)]


def _utf8(value: Any) -> None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("text must be valid UTF-8 (it holds a lone surrogate)") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _utf8(k)
            _utf8(v)
    elif isinstance(value, list):
        for v in value:
            _utf8(v)


class Body(BaseModel):
    """The base of every /admin JSON body. JSON's "\\ud800" (or the raw bytes of one) decodes to
    a lone surrogate no database or JSON encoder accepts: it is a 400 naming the field, before
    anything is written."""

    @field_validator("*", mode="before")
    @classmethod
    def _text_is_utf8(cls, value: Any) -> Any:
        _utf8(value)
        return value


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
