"""Names checked against the organization: once departments exist, a key or a limit naming a
department, project or user the organization does not know is refused (a typo would otherwise
bill or limit nobody), with the nearest known name suggested; a known user's key is billed
where the user belongs. Worded for both the CLI and the admin API (ValueError)."""

from __future__ import annotations

from difflib import get_close_matches

from tokenabacus.ledger.org import OrgStore


class Misplaced(ValueError):
    """A name the organization does not know, or a flag that contradicts it."""


def unknown(kind: str, name: str, known: list[str]) -> Misplaced:
    near = get_close_matches(name, known, n=1, cutoff=0.6)
    if near:
        hint = f": did you mean {near[0]!r}?"
    elif known:
        hint = f" (known: {', '.join(known[:8])}{', ...' if len(known) > 8 else ''})"
    else:
        hint = f": the organization has no {kind} yet (`tokenabacus org {kind} add`)"
    return Misplaced(f"unknown {kind} {name!r}{hint}")


def place(
    org: OrgStore, user: str | None, project: str | None, department: str | None
) -> tuple[str | None, str | None]:
    """(project, department) for a new key: a known user brings its own (a different one given
    is an error), a known project brings its department, and a user the organization does not
    know needs a known project or department. With no departments defined yet the
    names are free-form, as before an organization is set up."""
    departments = [d["name"] for d in org.departments()]
    if not departments:
        return _fill(org, user, project, department)
    if department is not None and department not in departments:
        raise unknown("department", department, departments)
    if project is not None and org.project(project) is None:
        raise unknown("project", project, [p["name"] for p in org.projects()])
    if project is not None and department is not None and org.department_of(project) != department:
        raise Misplaced(f"project {project!r} belongs to department {org.department_of(project)!r}, not {department!r}")
    if user is not None:
        row = org.user(user)
        if row is None:
            users = [u["name"] for u in org.users()]
            # A stranger billed to a known project or department (a service, a contractor) is
            # placed; one given alone would be billed nowhere the organization knows: a typo.
            if users and project is None and department is None:
                raise unknown("user", user, users)
        else:
            own_project, own_department = row["project"], row["department"]
            if department is not None and department != own_department:
                raise _moved(user, "department", own_department, department)
            if project is not None and own_project is not None and project != own_project:
                raise _moved(user, "project", own_project, project)
            if project is not None and org.department_of(project) != own_department:
                raise Misplaced(
                    f"user {user!r} belongs to department {own_department!r} and project {project!r} to "
                    f"{org.department_of(project)!r}: leave --project out, or move the user first "
                    "(`tokenabacus org user move`)"
                )
            return project or own_project, own_department
    return _fill(org, user, project, department)


def _moved(user: str, kind: str, own: str | None, given: str) -> Misplaced:
    return Misplaced(
        f"user {user!r} belongs to {kind} {own!r}, not {given!r}: leave --{kind} out, "
        "or move the user first (`tokenabacus org user move`)"
    )


def _fill(
    org: OrgStore, user: str | None, project: str | None, department: str | None
) -> tuple[str | None, str | None]:
    if user and not project and not department:
        row = org.user(user)
        if row is not None:
            project, department = row["project"], row["department"]
    if project and not department:
        department = org.department_of(project)
    return project, department


def check_scope(org: OrgStore, kind: str, value: str | None) -> None:
    """A limit's department, project or user must be one the organization knows (once it has
    departments); keys, models and the global scope are not the organization's."""
    departments = [d["name"] for d in org.departments()]
    if not departments or value is None:
        return
    if kind == "department" and value not in departments:
        raise unknown("department", value, departments)
    if kind == "project" and org.project(value) is None:
        raise unknown("project", value, [p["name"] for p in org.projects()])
    if kind == "user" and org.user(value) is None:
        users = [u["name"] for u in org.users()]
        if users:
            raise unknown("user", value, users)
