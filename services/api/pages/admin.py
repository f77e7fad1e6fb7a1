"""Administration: users and the audit log (administrators), and everyone's own API
tokens."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import select

from services.api.domain import api_tokens
from services.api.domain import users as domain
from services.api.domain.audit_query import list_audit
from services.api.pages.audit import audited
from services.api.pages.common import (
    confirm_page,
    context,
    page_query,
    path_uuid,
    principal,
    redirect,
)
from services.api.pages.flash import flash
from services.api.pages.forms import Form, parse
from services.api.pages.queries import project_names, visible_project_choices
from services.api.pages.render import render
from services.api.schemas.audit import AuditQuery
from services.api.schemas.auth import ApiTokenCreate
from services.api.schemas.users import UserCreate, UserUpdate
from services.api.web.errors import ApiError, Forbidden
from services.api.web.pagination import PageQuery
from services.common.db.enums import AuditOutcome
from services.common.db.models import User

routes = web.RouteTableDef()
USER_ACTIONS = {
    "make_admin": {"is_admin": True},
    "remove_admin": {"is_admin": False},
    "enable": {"is_active": True},
    "disable": {"is_active": False},
}


def _require_admin(request: web.Request) -> None:
    if not principal(request).acts_as_admin:
        raise Forbidden("only an administrator may see this page")


async def _users_page(request: web.Request, form: Form, status: int = 200) -> web.Response:
    ctx = context(request)
    email = request.query.get("email", "").strip()[:320] or None
    async with ctx.transaction() as session:
        rows, cursor, total = await domain.list_users(
            session, principal(request), page_query(request), email=email
        )
    return render(
        request,
        "admin/users.html",
        {
            "users": rows,
            "form": form,
            "email": email or "",
            "next_cursor": cursor,
            "total": total,
            "has_previous": bool(request.query.get("cursor")),
            "me": principal(request).user_id,
        },
        status=status,
    )


@routes.get("/admin/users")
async def list_users(request: web.Request) -> web.Response:
    _require_admin(request)
    return await _users_page(request, Form())


@routes.post("/admin/users")
async def create_user(request: web.Request) -> web.StreamResponse:
    _require_admin(request)
    ctx = context(request)
    form = await Form.read(request)
    try:
        body = parse(
            UserCreate,
            {
                "email": form.raw("email"),
                "password": form.raw("password"),
                "is_admin": form.checked("is_admin"),
            },
        )
        async with audited(request, "user.create") as note, ctx.transaction() as session:
            note.details.update(email=body.email, is_admin=body.is_admin)
            user = await domain.create_user(
                session,
                principal(request),
                email=body.email,
                password=body.password,
                is_admin=body.is_admin,
                rounds=ctx.settings.bcrypt_rounds,
            )
            note.target("user", user.id)
    except ApiError as exc:
        form.fail(exc)
        return await _users_page(request, form, status=exc.status)
    flash(
        request,
        "success",
        f"Account {user.email} created. Give them their password; "
        "they can add API tokens once logged in.",
    )
    return redirect("/admin/users")


@routes.post("/admin/users/{id}")
async def update_user(request: web.Request) -> web.StreamResponse:
    _require_admin(request)
    ctx = context(request)
    user_id = path_uuid(request, "id", "user")
    form = await Form.read(request)
    action = form.raw("action")
    fields: dict[str, Any] = dict(USER_ACTIONS.get(action, {}))
    if action == "password":
        fields["password"] = form.raw("password")
    body = parse(UserUpdate, fields)
    async with audited(request, "user.update") as note, ctx.transaction() as session:
        note.target("user", user_id)
        note.details.update({k: v for k, v in fields.items() if k != "password"})
        if body.password is not None:
            note.details["password_set"] = True
        user = await domain.update_user(
            session,
            principal(request),
            user_id,
            is_admin=body.is_admin,
            is_active=body.is_active,
            password=body.password,
            rounds=ctx.settings.bcrypt_rounds,
            now=ctx.clock(),
        )
    messages = {
        "make_admin": "is now an administrator",
        "remove_admin": "is no longer an administrator",
        "enable": "can log in again",
        "disable": "is disabled and logged out everywhere",
        "password": "has a new password (and was logged out everywhere)",
    }
    flash(request, "success", f"{user.email} {messages.get(action, 'was updated')}.")
    return redirect("/admin/users")


@routes.get("/admin/users/{id}/delete")
async def confirm_delete_user(request: web.Request) -> web.Response:
    _require_admin(request)
    ctx = context(request)
    user_id = path_uuid(request, "id", "user")
    async with ctx.transaction() as session:
        user = await domain.get_user(session, principal(request), user_id)
    return confirm_page(
        request,
        title=f"Delete the account {user.email}?",
        message="Its memberships, sessions and API tokens go with it; the audit log keeps "
        "its entries. To keep the account for later, disable it instead.",
        action=f"/admin/users/{user_id}/delete",
        button="Delete account",
        cancel="/admin/users",
    )


@routes.post("/admin/users/{id}/delete")
async def delete_user(request: web.Request) -> web.StreamResponse:
    _require_admin(request)
    ctx = context(request)
    user_id = path_uuid(request, "id", "user")
    async with audited(request, "user.delete") as note, ctx.transaction() as session:
        note.target("user", user_id)
        note.details["email"] = await domain.delete_user(session, principal(request), user_id)
    flash(request, "success", f"Account {note.details['email']} deleted.")
    return redirect("/admin/users")


# -- audit log ----------------------------------------------------------------------------


@routes.get("/admin/audit")
async def audit_log(request: web.Request) -> web.Response:
    _require_admin(request)
    ctx = context(request)
    q = request.query
    form = Form({k: v for k, v in q.items() if isinstance(v, str)})
    raw = {
        "action": q.get("action") or None,
        "outcome": q.get("outcome") or None,
        "user_id": q.get("user") or None,
        "project_id": q.get("project") or None,
        "from": f"{q['from']}T00:00:00Z" if q.get("from") else None,
        "to": f"{q['to']}T23:59:59.999999Z" if q.get("to") else None,
        "cursor": q.get("cursor") or None,
        "limit": 50,
    }
    rows: list[Any] = []
    cursor = total = None
    try:
        query = parse(AuditQuery, {k: v for k, v in raw.items() if v is not None})
        async with ctx.transaction() as session:
            rows, cursor, total = await list_audit(session, query)
    except ApiError as exc:
        form.fail(exc, {"user_id": "user", "project_id": "project", "from_": "from"})
    async with ctx.transaction() as session:
        users = list(
            (
                await session.execute(select(User.id, User.email).order_by(User.email).limit(500))
            ).all()
        )
        projects = await visible_project_choices(session, principal(request))
        names = await project_names(session, [r["project_id"] for r in rows])
    kept = {k: q[k] for k in ("action", "outcome", "user", "project", "from", "to") if q.get(k)}
    return render(
        request,
        "admin/audit.html",
        {
            "entries": rows,
            "form": form,
            "users": [(str(i), email) for i, email in users],
            "projects": [(str(i), name) for i, name in projects],
            "project_names": names,
            "outcomes": [(o.value, o.value) for o in AuditOutcome],
            "next_cursor": cursor,
            "total": total,
            "has_previous": bool(q.get("cursor")),
            "base": "/admin/audit"
            + ("?" + "&".join(f"{k}={v}" for k, v in kept.items()) if kept else ""),
        },
    )


# -- API tokens (everyone's own) ----------------------------------------------------------


async def _tokens_page(
    request: web.Request, form: Form, created: str | None = None, status: int = 200
) -> web.Response:
    ctx = context(request)
    who = principal(request)
    async with ctx.transaction() as session:
        rows, _, _ = await api_tokens.list_api_tokens(
            session, who, PageQuery(limit=200), include_revoked=True
        )
        projects = await visible_project_choices(session, who)
    return render(
        request,
        "admin/tokens.html",
        {
            "tokens": rows,
            "form": form,
            "created": created,
            "projects": [(str(i), name) for i, name in projects],
            "project_names": dict(projects),
        },
        status=status,
    )


@routes.get("/tokens")
async def list_tokens(request: web.Request) -> web.Response:
    return await _tokens_page(request, Form())


@routes.post("/tokens")
async def create_token(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    form = await Form.read(request)
    try:
        body = parse(
            ApiTokenCreate,
            {
                "name": form.raw("name"),
                "project_id": form.optional("project_id"),
                "role": form.optional("role"),
                "expires_in_days": form.optional("expires_in_days"),
            },
        )
        async with audited(request, "auth.token.create") as note, ctx.transaction() as session:
            note.details.update(name=body.name, role=body.role.value if body.role else None)
            token, secret = await api_tokens.create_api_token(
                session,
                principal(request),
                name=body.name,
                project_id=body.project_id,
                role=body.role,
                expires_in_days=body.expires_in_days,
                now=ctx.clock(),
            )
            note.target("api_token", token.id, token.project_id)
    except ApiError as exc:
        form.fail(exc)
        return await _tokens_page(request, form, status=exc.status)
    return await _tokens_page(request, Form(), created=secret)


@routes.post("/tokens/{id}/revoke")
async def revoke_token(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    token_id = path_uuid(request, "id", "API token")
    async with audited(request, "auth.token.revoke") as note, ctx.transaction() as session:
        note.target("api_token", token_id)
        token = await api_tokens.revoke_api_token(
            session, principal(request), token_id, ctx.clock()
        )
        note.target("api_token", token.id, token.project_id)
    flash(request, "success", f"Token “{token.name}” revoked; it stopped working at once.")
    return redirect("/tokens")
