"""``/auth``: registration, login sessions, the caller's own account and API tokens."""

from __future__ import annotations

from typing import Any

from services.api.auth.ratelimit import login_throttle
from services.api.domain import api_tokens, sessions, users
from services.api.domain.sessions import AuthConfig, Issued, Refused
from services.api.schemas.auth import (
    ApiTokenCreate,
    ApiTokenCreated,
    ApiTokenListQuery,
    ApiTokenOut,
    LoginRequest,
    LoginResponse,
    LogoutRequest,
    MeOut,
    PasswordChange,
    RefreshRequest,
    RegisterRequest,
)
from services.api.schemas.users import UserOut
from services.api.web.endpoint import Call, Endpoints, NoBody, NoQuery
from services.api.web.errors import Unauthorized
from services.api.web.pagination import Page
from services.common.db.models import User

routes = Endpoints("auth")


def _config(call: Call[Any, Any]) -> AuthConfig:
    return AuthConfig.of(call.ctx.settings, call.ctx.secrets)


def login_response(issued: Issued) -> LoginResponse:
    return LoginResponse(
        access_token=issued.access_token,
        expires_in=issued.expires_in,
        refresh_token=issued.refresh_token,
        user=UserOut.model_validate(issued.user),
    )


@routes.post(
    "/auth/register",
    body=RegisterRequest,
    response=UserOut,
    status=201,
    auth="public",
    summary="Create an account (the first one becomes admin; later ones only when "
    "registration is open)",
    action="auth.register",
    errors=(403, 409),
)
async def register(call: Call[RegisterRequest, NoQuery]) -> UserOut:
    call.audit.details["email"] = call.body.email
    async with call.ctx.transaction() as session:
        user = await users.register(
            session,
            email=call.body.email,
            password=call.body.password,
            allowed=call.ctx.settings.allow_registration,
            rounds=call.ctx.settings.bcrypt_rounds,
        )
    call.audit.target("user", user.id)
    call.audit.details["is_admin"] = user.is_admin
    return UserOut.model_validate(user)


@routes.post(
    "/auth/login",
    body=LoginRequest,
    response=LoginResponse,
    auth="public",
    summary="Log in with email and password: an access token and a refresh token",
    action="auth.login",
    errors=(401, 429),
)
async def login(call: Call[LoginRequest, NoQuery]) -> LoginResponse:
    call.audit.details["email"] = call.body.email  # the attempted email, never the password
    async with call.ctx.transaction() as session:
        issued = await sessions.login(
            session,
            _config(call),
            login_throttle(call.request.app),
            email=call.body.email,
            password=call.body.password,
            client=call.client_address,
            now=call.ctx.clock(),
        )
    call.audit.target("user", issued.user.id)
    return login_response(issued)


@routes.post(
    "/auth/refresh",
    body=RefreshRequest,
    response=LoginResponse,
    auth="public",
    summary="Swap a refresh token for new tokens (each refresh token works once)",
    action="auth.refresh",
    errors=(401,),
)
async def refresh(call: Call[RefreshRequest, NoQuery]) -> LoginResponse:
    async with call.ctx.transaction() as session:
        outcome = await sessions.refresh(
            session, _config(call), call.body.refresh_token, call.ctx.clock()
        )
    # A refused refresh may have revoked a session: that is committed above.
    if isinstance(outcome, Refused):
        if outcome.user_id is not None:
            call.audit.target("user", outcome.user_id)
            call.audit.details["email"] = outcome.email
        raise Unauthorized(outcome.message, code="invalid_refresh_token")
    call.audit.target("user", outcome.user.id)
    call.audit.details["email"] = outcome.user.email
    return login_response(outcome)


@routes.post(
    "/auth/logout",
    body=LogoutRequest,
    auth="public",
    summary="End a session (its refresh token), or all sessions of the account",
    action="auth.logout",
    errors=(401,),
)
async def logout(call: Call[LogoutRequest, NoQuery]) -> None:
    async with call.ctx.transaction() as session:
        done = await sessions.logout(
            session,
            call.principal_or_none,
            refresh_token=call.body.refresh_token,
            all_sessions=call.body.all_sessions,
            now=call.ctx.clock(),
        )
    if done.user_id is not None:
        call.audit.target("user", done.user_id)
    call.audit.details["all_sessions"] = call.body.all_sessions
    call.audit.details["revoked"] = done.revoked


@routes.get("/auth/me", response=MeOut, summary="The caller's account, and what the token may do")
async def me(call: Call[NoBody, NoQuery]) -> MeOut:
    principal = call.principal
    async with call.ctx.transaction() as session:
        user = await session.get(User, principal.user_id)
    if user is None:
        raise Unauthorized("this account no longer exists")
    return MeOut.model_validate(
        {
            **UserOut.model_validate(user).model_dump(),
            "auth": "session" if principal.api_token_id is None else "api_token",
            "api_token_id": principal.api_token_id,
            "token_project_id": principal.token_project_id,
            "token_role": principal.token_role,
        }
    )


@routes.post(
    "/auth/password",
    body=PasswordChange,
    response=LoginResponse,
    summary="Change your password: ends every session, returns new tokens for this one",
    action="auth.password",
    errors=(403, 429),
)
async def change_password(call: Call[PasswordChange, NoQuery]) -> LoginResponse:
    principal = call.principal
    call.audit.target("user", principal.user_id)
    api_tokens.require_login_session(principal)
    async with call.ctx.transaction() as session:
        issued = await sessions.change_password(
            session,
            _config(call),
            login_throttle(call.request.app),
            principal,
            current_password=call.body.current_password,
            new_password=call.body.new_password,
            client=call.client_address,
            now=call.ctx.clock(),
        )
    return login_response(issued)


# -- API tokens -------------------------------------------------------------------


@routes.get(
    "/auth/tokens",
    query=ApiTokenListQuery,
    response=Page[ApiTokenOut],
    summary="List your API tokens (without their secrets)",
    errors=(403,),
)
async def list_tokens(call: Call[NoBody, ApiTokenListQuery]) -> Page[ApiTokenOut]:
    async with call.ctx.transaction() as session:
        rows, cursor, total = await api_tokens.list_api_tokens(
            session, call.principal, call.query, include_revoked=call.query.include_revoked
        )
    return Page[ApiTokenOut](
        items=[ApiTokenOut.model_validate(t) for t in rows], next_cursor=cursor, total=total
    )


@routes.post(
    "/auth/tokens",
    body=ApiTokenCreate,
    response=ApiTokenCreated,
    status=201,
    summary="Create an API token (its secret is shown in this response only)",
    action="auth.token.create",
    errors=(403, 404),
)
async def create_token(call: Call[ApiTokenCreate, NoQuery]) -> ApiTokenCreated:
    body = call.body
    call.audit.details.update(name=body.name, role=body.role.value if body.role else None)
    async with call.ctx.transaction() as session:
        token, secret = await api_tokens.create_api_token(
            session,
            call.principal,
            name=body.name,
            project_id=body.project_id,
            role=body.role,
            expires_in_days=body.expires_in_days,
            now=call.ctx.clock(),
        )
    call.audit.target("api_token", token.id, token.project_id)
    return ApiTokenCreated.model_validate(
        {**ApiTokenOut.model_validate(token).model_dump(), "token": secret}
    )


@routes.delete(
    "/auth/tokens/{id}",
    summary="Revoke one of your API tokens (it stops working at once)",
    action="auth.token.revoke",
    errors=(403,),
)
async def revoke_token(call: Call[NoBody, NoQuery]) -> None:
    token_id = call.path_uuid("id", "API token")
    call.audit.target("api_token", token_id)
    async with call.ctx.transaction() as session:
        token = await api_tokens.revoke_api_token(
            session, call.principal, token_id, call.ctx.clock()
        )
    call.audit.target("api_token", token.id, token.project_id)
