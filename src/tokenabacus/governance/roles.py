"""What each role may do on /admin, as pure rules over an Identity (no I/O, no HTTP).

admin: everything. viewer: reads only, limited to one department or project (a department's
viewer also sees its projects, users and keys). member: its own identity and its own key's usage.
A refusal raises ``errors.Forbidden``; the admin app turns it into a 403 with OpenAI's error JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from tokenabacus.governance.errors import Forbidden
from tokenabacus.governance.keys import ADMIN, MEMBER, ROLES, VIEWER, Identity

SCOPE_KINDS = ("department", "project")  # what a viewer can be scoped to
DepartmentOf = Callable[[str], str | None]  # project -> its department (None: not in the organization)


def _scope(ident: Identity) -> tuple[str, str]:
    """A viewer's scope; a viewer row without a usable one sees nothing."""
    if ident.scope_kind not in SCOPE_KINDS or not ident.scope_value:
        raise Forbidden("this viewer key has no department or project to read", "no_scope")
    return ident.scope_kind, ident.scope_value


def require_admin(ident: Identity) -> None:
    if not ident.admin:
        raise Forbidden(f"this needs an admin key; a {ident.role} key may not do it", "admin_only")


def require_reader(ident: Identity) -> None:
    """Admins and viewers read; a viewer is limited to its scope by the route (read_filters)."""
    if ident.role not in (ADMIN, VIEWER):
        raise Forbidden(
            "a member key may only read /admin/me, /admin/me/usage and the quotas that apply to it", "member_only_me"
        )


def read_filters(
    ident: Identity, requested: Mapping[str, str | None], department_of_project: DepartmentOf | None = None
) -> dict[str, str]:
    """The record filters a read runs with: the requested ones (None: not given) within the
    caller's scope. A viewer always gets its scope's filter; asking for another department or
    project is refused rather than answered with nothing, so a viewer learns no other names."""
    out = {k: v for k, v in requested.items() if v is not None}
    if ident.admin:
        return out
    require_reader(ident)
    kind, value = _scope(ident)
    dept_of = department_of_project or (lambda _p: None)
    if kind == "department":
        if out.get("department", value) != value:
            raise Forbidden(f"this key reads department {value!r} only", "out_of_scope")
        project = out.get("project")
        # A project known to be elsewhere is refused; an unknown one is still filtered by department.
        if project is not None and dept_of(project) not in (None, value):
            raise Forbidden(
                f"project {project!r} is not in department {value!r}, the one this key reads", "out_of_scope"
            )
    else:
        if out.get("project", value) != value:
            raise Forbidden(f"this key reads project {value!r} only", "out_of_scope")
        dept = out.get("department")
        if dept is not None and dept != dept_of(value):
            raise Forbidden(f"department {dept!r} is not the department of project {value!r}", "out_of_scope")
    out[kind] = value
    return out


def can_see_scope(
    ident: Identity,
    scope_kind: str,
    scope_value: str | None,
    department_of_project: DepartmentOf | None = None,
    placement: tuple[str | None, str | None] | None = None,
) -> bool:
    """Whether the caller may read something scoped to (``scope_kind``, ``scope_value``): a
    department, project, user, key, or global. ``placement`` is the (project, department) a user
    or key belongs to (OrgStore.placement); without it a viewer does not see user or key scopes.

    admin: all. viewer: its scope and what is inside it (never global: it covers others' use).
    member: its own key and its own user."""
    if ident.admin:
        return True
    if ident.role == MEMBER or ident.role not in ROLES:
        return (scope_kind == "key" and scope_value == ident.key_id) or (
            scope_kind == "user" and scope_value is not None and scope_value == ident.user
        )
    if ident.scope_kind not in SCOPE_KINDS or not ident.scope_value:
        return False
    kind, value = ident.scope_kind, ident.scope_value
    dept_of = department_of_project or (lambda _p: None)
    if scope_kind == "department":
        return kind == "department" and scope_value == value
    if scope_kind == "project":
        if kind == "project":
            return scope_value == value
        return scope_value is not None and dept_of(scope_value) == value
    if scope_kind in ("user", "key") and placement is not None:
        project, department = placement
        if kind == "project":
            return project == value
        return department == value or (project is not None and dept_of(project) == value)
    return False


def key_scope(
    role: str, project: str | None, department: str | None, name: str | None, scope: tuple[str, str] | None = None
) -> tuple[str, str] | None:
    """Check a new key's role and return the scope it is stored with (viewers only). A viewer's
    scope is ``scope`` or else exactly one of ``department``/``project``; an admin key needs a
    name, so that every admin key in the list says whose it is. ValueError says what is wrong."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose from {', '.join(ROLES)}")
    if role == VIEWER:
        if scope is None:
            given = [(k, v) for k, v in (("department", department), ("project", project)) if v]
            if len(given) != 1:
                raise ValueError("a viewer key needs exactly one scope: a department or a project")
            scope = given[0]
        if scope[0] not in SCOPE_KINDS or not scope[1]:
            raise ValueError(f"a viewer's scope is a department or a project, not {scope[0]!r}")
        return scope
    if scope is not None:
        raise ValueError("only a viewer key has a scope")
    if role == ADMIN and not name:
        raise ValueError("an admin key needs a name")
    return None
