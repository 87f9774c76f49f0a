"""/admin/org: departments, projects and users. Admins and viewers list them (a viewer's lists
are cut to its department or project); admins add, move and delete them."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from fastapi import APIRouter

from tokenabacus.governance.roles import can_see_scope, read_filters
from tokenabacus.server.admin.common import Body, Caller

if TYPE_CHECKING:
    from tokenabacus.server.state import Gateway


class DepartmentIn(Body):
    name: str


class ProjectIn(Body):
    name: str
    department: str


class ProjectMove(Body):
    department: str


class UserIn(Body):
    name: str
    department: str | None = None
    project: str | None = None


class UserMove(Body):
    department: str | None = None
    project: str | None = None


def org_routes(gw: Gateway) -> tuple[APIRouter, APIRouter]:
    """(reads for admins and viewers, writes for admins)."""
    r = APIRouter()

    @r.get("/org/departments", summary="List departments (a viewer sees its own)", tags=["org"])
    async def list_departments(ident: Caller) -> list[dict]:
        rows = await asyncio.to_thread(gw.store.org.departments)
        return [d for d in rows if can_see_scope(ident, "department", d["name"])]

    @r.get("/org/projects", summary="List projects, optionally of one department (a viewer's scoped)", tags=["org"])
    async def list_projects(ident: Caller, department: str | None = None) -> list[dict]:
        def run() -> list[dict]:
            only = read_filters(ident, {"department": department}, gw.store.org.department_of)
            rows = gw.store.org.projects(only.get("department"))
            return [p for p in rows if only.get("project", p["name"]) == p["name"]]

        return await asyncio.to_thread(run)

    @r.get(
        "/org/users", summary="List users, optionally of one department or project (a viewer's scoped)", tags=["org"]
    )
    async def list_users(ident: Caller, department: str | None = None, project: str | None = None) -> list[dict]:
        def run() -> list[dict]:
            only = read_filters(ident, {"department": department, "project": project}, gw.store.org.department_of)
            return gw.store.org.users(only.get("department"), only.get("project"))

        return await asyncio.to_thread(run)

    w = APIRouter()

    @w.post("/org/departments", status_code=201, summary="Add a department", tags=["org"])
    async def add_department(body: DepartmentIn) -> dict:
        return await asyncio.to_thread(gw.store.org.add_department, body.name)

    @w.delete("/org/departments/{name:path}", summary="Delete an empty department", tags=["org"])
    async def delete_department(name: str) -> dict:
        await asyncio.to_thread(gw.store.org.delete_department, name)
        return {"name": name, "deleted": True}

    @w.post("/org/projects", status_code=201, summary="Add a project to a department", tags=["org"])
    async def add_project(body: ProjectIn) -> dict:
        return await asyncio.to_thread(gw.store.org.add_project, body.name, body.department)

    @w.patch("/org/projects/{name:path}", summary="Move a project (and its users) to another department", tags=["org"])
    async def move_project(name: str, body: ProjectMove) -> dict:
        return await asyncio.to_thread(gw.store.org.move_project, name, body.department)

    @w.delete("/org/projects/{name:path}", summary="Delete a project without users", tags=["org"])
    async def delete_project(name: str) -> dict:
        await asyncio.to_thread(gw.store.org.delete_project, name)
        return {"name": name, "deleted": True}

    @w.post("/org/users", status_code=201, summary="Add a user to a department or project", tags=["org"])
    async def add_user(body: UserIn) -> dict:
        return await asyncio.to_thread(gw.store.org.add_user, body.name, body.department, body.project)

    @w.patch("/org/users/{name:path}", summary="Move a user to another department or project", tags=["org"])
    async def move_user(name: str, body: UserMove) -> dict:
        return await asyncio.to_thread(gw.store.org.move_user, name, body.department, body.project)

    @w.delete("/org/users/{name:path}", summary="Delete a user", tags=["org"])
    async def delete_user(name: str) -> dict:
        await asyncio.to_thread(gw.store.org.delete_user, name)
        return {"name": name, "deleted": True}

    return r, w
