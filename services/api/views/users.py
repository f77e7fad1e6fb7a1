"""``/users``: accounts, for administrators."""

from __future__ import annotations

from services.api.domain import users as domain
from services.api.schemas.users import UserCreate, UserListQuery, UserOut, UserUpdate
from services.api.web.endpoint import Call, Endpoints, NoBody, NoQuery
from services.api.web.pagination import Page

routes = Endpoints("users")


@routes.get(
    "/users",
    query=UserListQuery,
    response=Page[UserOut],
    auth="admin",
    summary="List accounts (admin)",
)
async def list_users(call: Call[NoBody, UserListQuery]) -> Page[UserOut]:
    q = call.query
    async with call.ctx.transaction() as session:
        rows, cursor, total = await domain.list_users(
            session, call.principal, q, email=q.email, is_admin=q.is_admin, is_active=q.is_active
        )
    return Page[UserOut](
        items=[UserOut.model_validate(u) for u in rows], next_cursor=cursor, total=total
    )


@routes.post(
    "/users",
    body=UserCreate,
    response=UserOut,
    status=201,
    auth="admin",
    summary="Create an account (admin)",
    action="user.create",
    errors=(409,),
)
async def create_user(call: Call[UserCreate, NoQuery]) -> UserOut:
    call.audit.details.update(email=call.body.email, is_admin=call.body.is_admin)
    async with call.ctx.transaction() as session:
        user = await domain.create_user(
            session,
            call.principal,
            email=call.body.email,
            password=call.body.password,
            is_admin=call.body.is_admin,
            rounds=call.ctx.settings.bcrypt_rounds,
        )
    call.audit.target("user", user.id)
    return UserOut.model_validate(user)


@routes.get("/users/{id}", response=UserOut, auth="admin", summary="Get an account (admin)")
async def get_user(call: Call[NoBody, NoQuery]) -> UserOut:
    user_id = call.path_uuid("id", "user")
    async with call.ctx.transaction() as session:
        user = await domain.get_user(session, call.principal, user_id)
    return UserOut.model_validate(user)


@routes.patch(
    "/users/{id}",
    body=UserUpdate,
    response=UserOut,
    auth="admin",
    summary="Make admin or not, disable or enable, or set the password of an account (admin)",
    action="user.update",
    errors=(409,),
)
async def update_user(call: Call[UserUpdate, NoQuery]) -> UserOut:
    user_id = call.path_uuid("id", "user")
    body = call.body
    call.audit.target("user", user_id)
    call.audit.details.update(
        {
            k: v
            for k, v in (("is_admin", body.is_admin), ("is_active", body.is_active))
            if v is not None
        }
    )
    if body.password is not None:
        call.audit.details["password_set"] = True  # that it changed, never what to
    async with call.ctx.transaction() as session:
        user = await domain.update_user(
            session,
            call.principal,
            user_id,
            is_admin=body.is_admin,
            is_active=body.is_active,
            password=body.password,
            rounds=call.ctx.settings.bcrypt_rounds,
            now=call.ctx.clock(),
        )
    return UserOut.model_validate(user)


@routes.delete(
    "/users/{id}",
    auth="admin",
    summary="Delete an account and its memberships, sessions and API tokens (admin)",
    action="user.delete",
    errors=(409,),
)
async def delete_user(call: Call[NoBody, NoQuery]) -> None:
    user_id = call.path_uuid("id", "user")
    call.audit.target("user", user_id)
    async with call.ctx.transaction() as session:
        call.audit.details["email"] = await domain.delete_user(session, call.principal, user_id)
