"""The organization's rows: departments, their projects, and the users of both.

These rows are the directory (what exists, who belongs where); usage records carry the names
themselves, so moving or deleting an entry never rewrites the ledger. All methods are synchronous
(worker threads and the CLI only) and raise OrgError, worded for a person, on anything refused.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

from sqlalchemy import Connection, func, select
from sqlalchemy.exc import IntegrityError

from tokenabacus.ledger.database import Database
from tokenabacus.ledger.meta import Meta
from tokenabacus.ledger.record import now_ms
from tokenabacus.ledger.schema import api_keys, departments, projects, users

MAX_NAME = 200


class OrgError(ValueError):
    """A refused change or an unusable name (HTTP 400)."""


class NotFound(OrgError):
    """The department, project or user does not exist (HTTP 404)."""


class Conflict(OrgError):
    """It exists already, or is still in use (HTTP 409)."""


def check_name(kind: str, name: str) -> str:
    if not 1 <= len(name) <= MAX_NAME:
        raise OrgError(f"a {kind} name must be 1 to {MAX_NAME} characters long")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in name):
        # Cs: a lone surrogate is no character (it cannot be stored as UTF-8); the entry points refuse it too.
        raise OrgError(f"a {kind} name cannot contain control characters or lone surrogates")
    return name


def _unknown_department(name: str) -> NotFound:
    return NotFound(f"unknown department {name!r}: add it first with `tokenabacus org department add {name}`")


def _unknown_project(name: str) -> NotFound:
    return NotFound(
        f"unknown project {name!r}: add it first with `tokenabacus org project add {name} --department DEPT`"
    )


def _one(conn: Connection, table, name: str) -> dict | None:
    row = conn.execute(select(table).where(table.c.name == name)).first()
    return dict(row._mapping) if row is not None else None


def _count(conn: Connection, table, *conds) -> int:
    return conn.execute(select(func.count()).select_from(table).where(*conds)).scalar_one()


def _counts(conn: Connection, column) -> dict[str, int]:
    return {v: n for v, n in conn.execute(select(column, func.count()).group_by(column))}


class OrgStore:
    def __init__(self, db: Database, meta: Meta) -> None:
        self.db = db
        self.meta = meta

    def _insert(self, table, kind: str, row: dict, place: Callable[[Connection], dict] | None = None) -> dict:
        """Insert ``row``, completed by ``place`` (which checks its parents) in the same transaction."""
        try:
            with self.db.begin() as conn:
                if _one(conn, table, row["name"]) is not None:
                    raise Conflict(f"{kind} {row['name']!r} exists already")
                if place is not None:
                    row = {**row, **place(conn)}
                conn.execute(table.insert().values(**row))
        except IntegrityError:  # added by someone else between our check and our insert
            raise Conflict(f"{kind} {row['name']!r} exists already") from None
        return row

    # Departments -------------------------------------------------------------------------------
    def add_department(self, name: str) -> dict:
        return self._insert(departments, "department", {"name": check_name("department", name), "created_at": now_ms()})

    def departments(self) -> list[dict]:
        """Each department with how many projects and users it holds, by name."""
        with self.db.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(select(departments).order_by(departments.c.name))]
            n_projects = _counts(conn, projects.c.department)
            n_users = _counts(conn, users.c.department)
        for r in rows:
            r["projects"] = n_projects.get(r["name"], 0)
            r["users"] = n_users.get(r["name"], 0)
        return rows

    def delete_department(self, name: str) -> None:
        """Refused while projects or users still belong to it: they would be left nowhere."""
        with self.db.begin() as conn:
            if _one(conn, departments, name) is None:
                raise NotFound(f"no department {name!r}")
            n_p = _count(conn, projects, projects.c.department == name)
            n_u = _count(conn, users, users.c.department == name)
            if n_p or n_u:
                raise Conflict(
                    f"department {name!r} still has {n_p} project(s) and {n_u} user(s); move or delete them first"
                )
            conn.execute(departments.delete().where(departments.c.name == name))

    # Projects ----------------------------------------------------------------------------------
    def add_project(self, name: str, department: str) -> dict:
        def place(conn: Connection) -> dict:
            if _one(conn, departments, department) is None:
                raise _unknown_department(department)
            return {"department": department}

        return self._insert(projects, "project", {"name": check_name("project", name), "created_at": now_ms()}, place)

    def projects(self, department: str | None = None) -> list[dict]:
        q = select(projects).order_by(projects.c.name)
        if department is not None:
            q = q.where(projects.c.department == department)
        with self.db.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def project(self, name: str) -> dict | None:
        with self.db.connect() as conn:
            return _one(conn, projects, name)

    def department_of(self, project: str) -> str | None:
        row = self.project(project)
        return row["department"] if row else None

    def move_project(self, name: str, department: str) -> dict:
        """The project and its users now belong to ``department``."""
        with self.db.begin() as conn:
            row = _one(conn, projects, name)
            if row is None:
                raise NotFound(f"no project {name!r}")
            if _one(conn, departments, department) is None:
                raise _unknown_department(department)
            conn.execute(projects.update().where(projects.c.name == name).values(department=department))
            conn.execute(users.update().where(users.c.project == name).values(department=department))
        return {**row, "department": department}

    def delete_project(self, name: str) -> None:
        """Refused while users still belong to it."""
        with self.db.begin() as conn:
            if _one(conn, projects, name) is None:
                raise NotFound(f"no project {name!r}")
            n_u = _count(conn, users, users.c.project == name)
            if n_u:
                raise Conflict(f"project {name!r} still has {n_u} user(s); move or delete them first")
            conn.execute(projects.delete().where(projects.c.name == name))

    # Users -------------------------------------------------------------------------------------
    def _place(self, conn: Connection, department: str | None, project: str | None) -> tuple[str, str | None]:
        """(department, project) for a user: the project must exist and decides the department."""
        if project is not None:
            p = _one(conn, projects, project)
            if p is None:
                raise _unknown_project(project)
            if department is not None and department != p["department"]:
                raise OrgError(f"project {project!r} belongs to department {p['department']!r}, not {department!r}")
            return p["department"], project
        if department is None:
            raise OrgError("a user needs a department or a project")
        if _one(conn, departments, department) is None:
            raise _unknown_department(department)
        return department, None

    def add_user(self, name: str, department: str | None = None, project: str | None = None) -> dict:
        def place(conn: Connection) -> dict:
            d, p = self._place(conn, department, project)
            return {"department": d, "project": p}

        return self._insert(users, "user", {"name": check_name("user", name), "created_at": now_ms()}, place)

    def users(self, department: str | None = None, project: str | None = None) -> list[dict]:
        q = select(users).order_by(users.c.name)
        if department is not None:
            q = q.where(users.c.department == department)
        if project is not None:
            q = q.where(users.c.project == project)
        with self.db.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def user(self, name: str) -> dict | None:
        with self.db.connect() as conn:
            return _one(conn, users, name)

    def move_user(self, name: str, department: str | None = None, project: str | None = None) -> dict:
        """To a project (and its department), or to a department: the user keeps its project
        only when that project is in the new department."""
        with self.db.begin() as conn:
            row = _one(conn, users, name)
            if row is None:
                raise NotFound(f"no user {name!r}")
            if project is None and department is not None and row["project"] is not None:
                current = _one(conn, projects, row["project"])
                if current is not None and current["department"] == department:
                    project = row["project"]
            department, project = self._place(conn, department, project)
            conn.execute(users.update().where(users.c.name == name).values(department=department, project=project))
        return {**row, "department": department, "project": project}

    def delete_user(self, name: str) -> None:
        with self.db.begin() as conn:
            if not conn.execute(users.delete().where(users.c.name == name)).rowcount:
                raise NotFound(f"no user {name!r}")

    # Reading it whole --------------------------------------------------------------------------
    def placement(self, kind: str, value: str) -> tuple[str | None, str | None] | None:
        """(project, department) a user, project or key belongs to; None when unknown. What a
        scoped reader needs to judge a user- or key-scoped row (roles.can_see_scope)."""
        with self.db.connect() as conn:
            if kind == "user":
                u = _one(conn, users, value)
                return (u["project"], u["department"]) if u else None
            if kind == "project":
                p = _one(conn, projects, value)
                return (value, p["department"]) if p else None
            if kind == "key":
                k = conn.execute(
                    select(api_keys.c.project, api_keys.c.department).where(api_keys.c.key_id == value)
                ).first()
                return (k.project, k.department) if k else None
        return None

    def tree(self) -> list[dict]:
        """Departments, each with its projects (each with its users) and its users outside any
        project."""
        with self.db.connect() as conn:
            deps = [r.name for r in conn.execute(select(departments.c.name).order_by(departments.c.name))]
            prjs = list(conn.execute(select(projects.c.name, projects.c.department).order_by(projects.c.name)))
            usrs = list(conn.execute(select(users.c.name, users.c.department, users.c.project).order_by(users.c.name)))
        out = []
        for d in deps:
            out.append(
                {
                    "department": d,
                    "projects": [
                        {"project": p.name, "users": [u.name for u in usrs if u.project == p.name]}
                        for p in prjs
                        if p.department == d
                    ],
                    "users": [u.name for u in usrs if u.department == d and u.project is None],
                }
            )
        return out
