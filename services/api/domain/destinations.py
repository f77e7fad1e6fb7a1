"""Destinations: where artifacts are written (the service layer shared by the API and
the pages).

A destination is global (``project_id`` null: set up by an admin, usable and visible
by everyone) or belongs to one project (managed by its owners). Local directories
must lie under an allowed root after resolving symlinks, and never inside, around or
at another local destination's directory: each destination's reconciliation sweep
treats files it does not know as orphans, so nested destinations would eat each
other's artifacts.
"""

from __future__ import annotations

import asyncio
import logging
import re
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.auth.principal import Principal
from services.api.domain.access import require_role, visible_projects
from services.api.schemas.destinations import (
    DestinationCreate,
    DestinationUpdate,
    LocalSettings,
)
from services.api.web.errors import Conflict, Forbidden, ValidationFailed, not_found
from services.api.web.pagination import PageQuery, paginate
from services.common.db.enums import DestinationKind, ProjectRole
from services.common.db.models import BackupCopy, Destination, schedule_destinations
from services.common.settings import Settings

log = logging.getLogger(__name__)

DESTINATION = "destination"
DEFAULT_NAME = "local"
DEFAULT_SUBDIR = "default"
DEFAULT_ID = uuid.uuid5(uuid.NAMESPACE_URL, "backupmanager:destination:default-local")
"""Fixed, so API replicas racing to create the default make one row, not two."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# -- local directories (blocking: call through asyncio.to_thread) -------------------


def _invalid(message: str) -> ValidationFailed:
    return ValidationFailed(f"path {message}", fields={"path": message})


def _under(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def resolve_local_path(raw: str, roots: Sequence[Path]) -> Path:
    """The real directory ``raw`` names, if it lies under one of ``roots``.

    Symlinks of the parts that exist are resolved, so a link pointing outside the
    roots is refused; ``..`` is refused outright (it reads as an escape attempt even
    where it would resolve inside)."""
    if _CONTROL.search(raw):
        raise _invalid("must not contain control characters")
    path = Path(raw)
    if not path.is_absolute():
        raise _invalid("must be an absolute path")
    if ".." in path.parts:
        raise _invalid("must not contain '..'")
    try:
        resolved = path.resolve()
        real_roots = [root.resolve() for root in roots]
    except (OSError, RuntimeError):  # a symlink loop, an unreadable directory
        raise _invalid("cannot be resolved (a symlink loop?)") from None
    if not _under(resolved, real_roots):
        allowed = ", ".join(str(root) for root in real_roots)
        raise _invalid(f"must lie under an allowed root ({allowed}) after resolving symlinks")
    return resolved


def prepare_local_directory(path: Path, roots: Sequence[Path]) -> None:
    """Create ``path`` (each missing part 0700) and prove the service can write in it."""
    try:
        missing = [part for part in (path, *path.parents) if not part.exists()]
        for part in reversed(missing):
            part.mkdir(mode=0o700, exist_ok=True)
    except FileExistsError:
        raise _invalid("exists and is not a directory") from None
    except OSError as exc:
        raise _invalid(f"cannot be created: {exc.strerror}") from None
    # A part swapped for a symlink meanwhile would show here.
    if resolve_local_path(str(path), roots) != path:
        raise _invalid("changed while being checked; try again")
    if not path.is_dir():
        raise _invalid("exists and is not a directory")
    try:
        with tempfile.TemporaryFile(dir=path, prefix=".bm-write-test-"):
            pass
    except OSError as exc:
        raise _invalid(f"is not writable by the service: {exc.strerror}") from None


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


async def _check_no_overlap(session: AsyncSession, path: Path, own_id: uuid.UUID | None) -> None:
    rows = await session.execute(
        select(Destination.id, Destination.config).where(Destination.kind == DestinationKind.LOCAL)
    )
    for other_id, config in rows:
        other = config.get("path")
        if other_id != own_id and isinstance(other, str) and _overlaps(path, Path(other)):
            raise Conflict(
                "this directory is inside, around or the same as another destination's "
                "directory; choose a separate one",
                fields={"path": "overlaps another destination's directory"},
            )


async def _local_directory(
    session: AsyncSession, settings: Settings, raw: str, own_id: uuid.UUID | None
) -> Path:
    roots = settings.local_destination_roots
    path = await asyncio.to_thread(resolve_local_path, raw, roots)
    await _check_no_overlap(session, path, own_id)
    await asyncio.to_thread(prepare_local_directory, path, roots)
    return path


# -- the default destination --------------------------------------------------------


async def ensure_default_destination(
    session: AsyncSession, settings: Settings
) -> Destination | None:
    """While there is no destination at all, create the global ``local`` one at
    ``<BM_STORAGE_DIR>/default`` (if that lies under an allowed root). Once any
    destination exists this does nothing, so an admin may delete the default."""
    if await session.scalar(select(Destination.id).limit(1)) is not None:
        return None
    path = (settings.backups_dir / DEFAULT_SUBDIR).expanduser().absolute()
    try:
        path = await asyncio.to_thread(
            resolve_local_path, str(path), settings.local_destination_roots
        )
    except ValidationFailed:
        log.info("no default destination: %s is outside BM_LOCAL_DESTINATION_ROOTS", path)
        return None
    try:
        await asyncio.to_thread(path.mkdir, mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("default destination %s cannot be created: %s", path, exc.strerror)
    destination = Destination(
        id=DEFAULT_ID,
        name=DEFAULT_NAME,
        kind=DestinationKind.LOCAL,
        config={"path": str(path)},
        project_id=None,
    )
    try:
        async with session.begin_nested():
            session.add(destination)
    except IntegrityError:  # another replica made it first
        return None
    log.info("created the default destination %r at %s", DEFAULT_NAME, path)
    return destination


# -- access ---------------------------------------------------------------------------


async def get_destination(
    session: AsyncSession, principal: Principal, destination_id: uuid.UUID
) -> Destination:
    """A destination the caller may see: any global one, or one of a visible project."""
    destination = await session.get(Destination, destination_id)
    if destination is None:
        raise not_found(DESTINATION)
    if destination.project_id is not None:
        await require_role(
            session, principal, destination.project_id, ProjectRole.VIEWER, DESTINATION
        )
    return destination


async def _require_manage(
    session: AsyncSession, principal: Principal, project_id: uuid.UUID | None, what: str
) -> None:
    if project_id is None:
        if not principal.acts_as_admin:
            raise Forbidden("only an administrator may manage global destinations")
        return
    await require_role(session, principal, project_id, ProjectRole.OWNER, what)


async def _check_name_free(
    session: AsyncSession, project_id: uuid.UUID | None, name: str, own_id: uuid.UUID | None
) -> None:
    scope = (
        Destination.project_id.is_(None)
        if project_id is None
        else Destination.project_id == project_id
    )
    stmt = select(Destination.id).where(scope, Destination.name == name)
    if own_id is not None:
        stmt = stmt.where(Destination.id != own_id)
    if await session.scalar(stmt) is not None:
        where = "global destinations" if project_id is None else "this project"
        raise Conflict(
            f"a destination with this name exists among {where}",
            fields={"name": f"already taken among {where}"},
        )


def _not_supported(kind: str) -> ValidationFailed:
    return ValidationFailed(
        f"{kind} destinations are not supported yet", fields={"kind": "not supported yet"}
    )


# -- operations -----------------------------------------------------------------------


async def list_destinations(
    session: AsyncSession,
    principal: Principal,
    settings: Settings,
    page: PageQuery,
    *,
    project_id: uuid.UUID | None,
    kind: DestinationKind | None,
) -> tuple[list[Destination], str | None, int | None]:
    await ensure_default_destination(session, settings)
    if project_id is not None:
        await require_role(session, principal, project_id, ProjectRole.VIEWER, "project")
        visible = or_(Destination.project_id.is_(None), Destination.project_id == project_id)
    else:
        visible = or_(
            Destination.project_id.is_(None),
            visible_projects(principal, Destination.project_id),  # type: ignore[arg-type]
        )
    stmt = select(Destination).where(visible)
    if kind is not None:
        stmt = stmt.where(Destination.kind == kind)
    return await paginate(session, stmt, page, order=(Destination.created_at, Destination.id))


async def create_destination(
    session: AsyncSession, principal: Principal, settings: Settings, body: DestinationCreate
) -> Destination:
    spec = body.root
    await _require_manage(session, principal, spec.project_id, "project")
    if not isinstance(spec, LocalSettings):
        raise _not_supported(spec.kind)
    await ensure_default_destination(session, settings)
    await _check_name_free(session, spec.project_id, spec.name, None)
    path = await _local_directory(session, settings, spec.path, None)
    destination = Destination(
        name=spec.name,
        kind=DestinationKind.LOCAL,
        config={"path": str(path)},
        project_id=spec.project_id,
        enabled=spec.enabled,
    )
    session.add(destination)
    await session.flush()
    return destination


async def update_destination(
    session: AsyncSession,
    principal: Principal,
    settings: Settings,
    destination_id: uuid.UUID,
    body: DestinationUpdate,
) -> Destination:
    spec = body.root
    destination = await get_destination(session, principal, destination_id)
    await _require_manage(session, principal, destination.project_id, DESTINATION)
    if spec.kind != destination.kind.value:
        raise ValidationFailed(
            "the kind of a destination cannot change; create a new one",
            fields={"kind": f"must stay {destination.kind.value}"},
        )
    if not isinstance(spec, LocalSettings):
        raise _not_supported(spec.kind)
    await _check_name_free(session, destination.project_id, spec.name, destination.id)
    path = await asyncio.to_thread(resolve_local_path, spec.path, settings.local_destination_roots)
    if str(path) != destination.config.get("path"):
        if await _copies(session, destination.id):
            raise Conflict(
                "this destination holds backups, so its directory cannot change; "
                "create a new destination instead",
                fields={"path": "cannot change while backups are stored here"},
            )
        path = await _local_directory(session, settings, spec.path, destination.id)
        destination.config = {**destination.config, "path": str(path)}
    destination.name = spec.name
    destination.enabled = spec.enabled
    await session.flush()
    return destination


async def delete_destination(
    session: AsyncSession, principal: Principal, destination_id: uuid.UUID
) -> Destination:
    """Delete the row (never the files); refused while a schedule names it or a
    backup copy is stored there."""
    destination = await get_destination(session, principal, destination_id)
    await _require_manage(session, principal, destination.project_id, DESTINATION)
    schedules = await session.scalar(
        select(func.count())
        .select_from(schedule_destinations)
        .where(schedule_destinations.c.destination_id == destination.id)
    )
    if schedules:
        raise Conflict(f"{schedules} schedule(s) write to this destination: change them first")
    copies = await _copies(session, destination.id)
    if copies:
        raise Conflict(f"{copies} backup(s) are stored here: delete them first")
    try:
        async with session.begin_nested():
            await session.delete(destination)
    except IntegrityError:  # a schedule or a copy appeared meanwhile
        raise Conflict("this destination is in use by a schedule or a backup") from None
    return destination


async def _copies(session: AsyncSession, destination_id: uuid.UUID) -> int:
    count = await session.scalar(
        select(func.count())
        .select_from(BackupCopy)
        .where(BackupCopy.destination_id == destination_id)
    )
    return count or 0
