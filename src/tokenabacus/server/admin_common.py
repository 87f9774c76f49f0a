"""Moved to server/admin/common.py; kept only so server/admin_reports.py imports it from here
until it moves into the package too (remove at merge)."""

from tokenabacus.server.admin.common import XLSX, Caller, Format, export

__all__ = ["XLSX", "Caller", "Format", "export"]
