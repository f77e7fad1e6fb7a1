"""Logging in and out of the pages (the API's login, kept in a cookie)."""

from __future__ import annotations

from aiohttp import web

from services.api.auth.ratelimit import login_throttle
from services.api.domain import sessions
from services.api.domain.sessions import AuthConfig
from services.api.pages.audit import audited
from services.api.pages.common import context, redirect, safe_next, visitor
from services.api.pages.flash import flash
from services.api.pages.forms import Form, parse
from services.api.pages.render import render
from services.api.pages.session import VISITOR, clear_session_cookie, set_session_cookie
from services.api.schemas.auth import LoginRequest
from services.api.web.errors import ApiError, TooManyRequests, Unauthorized, ValidationFailed

routes = web.RouteTableDef()


def _login_page(request: web.Request, form: Form, status: int = 200) -> web.Response:
    return render(request, "login.html", {"form": form}, status=status)


@routes.get("/login")
async def login_form(request: web.Request) -> web.StreamResponse:
    target = safe_next(request.query.get("next"))
    if request.get(VISITOR) is not None:
        return redirect(target)
    return _login_page(request, Form({"next": target}))


@routes.post("/login")
async def login(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    form = await Form.read(request)
    target = safe_next(form.value("next"))
    try:
        body = parse(LoginRequest, {"email": form.raw("email"), "password": form.raw("password")})
        async with audited(request, "auth.login") as note:
            note.details["email"] = body.email  # the attempted email, never the password
            async with ctx.transaction() as session:
                issued = await sessions.login(
                    session,
                    AuthConfig.of(ctx.settings, ctx.secrets),
                    login_throttle(request.app),
                    email=body.email,
                    password=body.password,
                    client=request.remote or "",
                    now=ctx.clock(),
                )
            note.target("user", issued.user.id)
    except ValidationFailed as exc:
        form.fail(exc)
        form.message = "Enter your email and password."
        return _login_page(request, form, 422)
    except TooManyRequests as exc:
        form.fail(exc)
        return _login_page(request, form, 429)
    except (Unauthorized, ApiError) as exc:
        form.fail(exc)
        form.message = exc.message[:1].upper() + exc.message[1:] + "."
        return _login_page(request, form, exc.status)
    response = redirect(target)
    set_session_cookie(response, request, ctx, issued.refresh_token)
    return response


@routes.post("/logout")
async def logout(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    current = visitor(request)
    async with audited(request, "auth.logout") as note:
        note.target("user", current.principal.user_id)
        async with ctx.transaction() as session:
            done = await sessions.logout(
                session,
                current.principal,
                refresh_token=current.token,
                all_sessions=False,
                now=ctx.clock(),
            )
        note.details.update(all_sessions=False, revoked=done.revoked)
    request[VISITOR] = None
    flash(request, "success", "You are logged out.")
    response = redirect("/login")
    clear_session_cookie(response)
    return response
