"""`tokenabacus org ...`: departments, their projects, and their users (who belongs where)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from tokenabacus.cli.common import ConfigOpt, DataDirOpt, open_store
from tokenabacus.cli.output import Fmt, emit, fail, iso

if TYPE_CHECKING:
    from tokenabacus.ledger.org import OrgStore

T = TypeVar("T")
FormatOpt = Annotated[Fmt, typer.Option("--format", help="table, json or csv.")]
DepartmentOpt = Annotated[str | None, typer.Option("--department", help="The department.")]
ProjectOpt = Annotated[str | None, typer.Option("--project", help="The project.")]
DEPARTMENT_COLS = ["name", "projects", "users", "created_at"]
PROJECT_COLS = ["name", "department", "created_at"]
USER_COLS = ["name", "department", "project", "created_at"]


def register(app: typer.Typer) -> None:
    org = typer.Typer(help="The organization: departments, projects and users.", no_args_is_help=True)
    department = typer.Typer(help="Add, list and delete departments.", no_args_is_help=True)
    department.command("add")(department_add)
    department.command("list")(department_list)
    department.command("delete")(department_delete)
    project = typer.Typer(help="Add, list, move and delete projects.", no_args_is_help=True)
    project.command("add")(project_add)
    project.command("list")(project_list)
    project.command("move")(project_move)
    project.command("delete")(project_delete)
    user = typer.Typer(help="Add, list, move and delete users.", no_args_is_help=True)
    user.command("add")(user_add)
    user.command("list")(user_list)
    user.command("move")(user_move)
    user.command("delete")(user_delete)
    org.add_typer(department, name="department")
    org.add_typer(project, name="project")
    org.add_typer(user, name="user")
    org.command("show")(show)
    app.add_typer(org, name="org")


def _org(config: str | None, data_dir: str | None, create: bool = True) -> OrgStore:
    return open_store(config, data_dir, create=create).org


def _do(call: Callable[[], T]) -> T:
    """Run a change or read; a refusal is one line on stderr."""
    from tokenabacus.ledger.org import OrgError

    try:
        return call()
    except OrgError as e:
        fail(str(e))


def _emit(rows: list[dict], cols: list[str], fmt: Fmt, title: str) -> None:
    emit([{**r, "created_at": iso(r["created_at"])} for r in rows], cols, fmt, title=title)


# Departments ---------------------------------------------------------------------------------
def department_add(name: str, config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Add a department."""
    org = _org(config, data_dir)
    _do(lambda: org.add_department(name))
    typer.echo(f"added department {name}")


def department_list(fmt: FormatOpt = Fmt.table, config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """List departments with their number of projects and users."""
    _emit(_org(config, data_dir, create=False).departments(), DEPARTMENT_COLS, fmt, "Departments")


def department_delete(name: str, config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Delete a department that no longer has projects or users."""
    org = _org(config, data_dir, create=False)
    _do(lambda: org.delete_department(name))
    typer.echo(f"deleted department {name}")


# Projects ------------------------------------------------------------------------------------
def project_add(
    name: str,
    department: Annotated[str, typer.Option("--department", help="The department it belongs to.")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Add a project to a department."""
    org = _org(config, data_dir)
    _do(lambda: org.add_project(name, department))
    typer.echo(f"added project {name} to department {department}")


def project_list(
    department: DepartmentOpt = None, fmt: FormatOpt = Fmt.table, config: ConfigOpt = None, data_dir: DataDirOpt = None
) -> None:
    """List projects, all or one department's."""
    rows = _org(config, data_dir, create=False).projects(department)
    _emit(rows, PROJECT_COLS, fmt, "Projects" + (f" of {department}" if department else ""))


def project_move(
    name: str,
    department: Annotated[str, typer.Option("--department", help="The department it moves to.")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Move a project, and its users, to another department."""
    org = _org(config, data_dir, create=False)
    _do(lambda: org.move_project(name, department))
    typer.echo(f"moved project {name} to department {department}")


def project_delete(name: str, config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Delete a project that no longer has users."""
    org = _org(config, data_dir, create=False)
    _do(lambda: org.delete_project(name))
    typer.echo(f"deleted project {name}")


# Users ---------------------------------------------------------------------------------------
def user_add(
    name: str,
    department: DepartmentOpt = None,
    project: Annotated[str | None, typer.Option("--project", help="The project (its department is implied).")] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Add a user to a department, or to a project of one. Keys created for the user take both."""
    org = _org(config, data_dir)
    row = _do(lambda: org.add_user(name, department, project))
    where = f"project {row['project']} of department {row['department']}" if row["project"] else row["department"]
    typer.echo(f"added user {name} to {where}")


def user_list(
    department: DepartmentOpt = None,
    project: ProjectOpt = None,
    fmt: FormatOpt = Fmt.table,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """List users, all or one department's or project's."""
    _emit(_org(config, data_dir, create=False).users(department, project), USER_COLS, fmt, "Users")


def user_move(
    name: str,
    department: DepartmentOpt = None,
    project: ProjectOpt = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Move a user to another project or department (existing keys keep their owner)."""
    if department is None and project is None:
        fail("say where to: --department or --project")
    org = _org(config, data_dir, create=False)
    row = _do(lambda: org.move_user(name, department, project))
    typer.echo(f"moved user {name} to department {row['department']}, project {row['project'] or '-'}")


def user_delete(name: str, config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Delete a user (its keys stay; revoke them with `tokenabacus keys revoke`)."""
    org = _org(config, data_dir, create=False)
    _do(lambda: org.delete_user(name))
    typer.echo(f"deleted user {name}")


# The whole tree ------------------------------------------------------------------------------
def show(fmt: FormatOpt = Fmt.table, config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """The organization as a tree: departments, their projects, and their users."""
    tree = _org(config, data_dir, create=False).tree()
    if fmt == Fmt.json:
        import orjson

        typer.echo(orjson.dumps(tree, option=orjson.OPT_INDENT_2).decode())
        return
    if fmt == Fmt.csv:
        emit(_flat(tree), ["department", "project", "user"], fmt)
        return
    _print_tree(tree)


def _flat(tree: list[dict]) -> list[dict]:
    """One row per user, project without users, or empty department."""
    rows: list[dict] = []
    for d in tree:
        dept = d["department"]
        before = len(rows)
        for p in d["projects"]:
            rows += [{"department": dept, "project": p["project"], "user": u} for u in p["users"]] or [
                {"department": dept, "project": p["project"], "user": None}
            ]
        rows += [{"department": dept, "project": None, "user": u} for u in d["users"]]
        if len(rows) == before:
            rows.append({"department": dept, "project": None, "user": None})
    return rows


def _print_tree(tree: list[dict]) -> None:
    import sys

    from rich.console import Console
    from rich.text import Text
    from rich.tree import Tree

    # Names are shown as text, never as Rich markup; piped output is not wrapped.
    console = Console() if sys.stdout.isatty() else Console(soft_wrap=True)
    if not tree:
        console.print("[dim]no departments[/dim] (add one with `tokenabacus org department add NAME`)")
        return
    root = Tree(Text("organization", style="bold"))
    for d in tree:
        dept = root.add(Text(f"department {d['department']}", style="bold"))
        for p in d["projects"]:
            proj = dept.add(Text(f"project {p['project']}"))
            for u in p["users"]:
                proj.add(Text(f"user {u}"))
        for u in d["users"]:
            dept.add(Text(f"user {u}"))
    console.print(root)
