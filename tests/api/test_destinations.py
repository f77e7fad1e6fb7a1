"""Destinations: the default one, global (admin) and project (owner) destinations,
who sees what, local paths confined to the allowed roots (no '..', no symlink
escape, no overlap), not-yet-supported kinds, and deletion refused while in use."""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from services.common.db.enums import BackupTrigger, ProjectRole
from services.common.db.models import (
    Backup,
    BackupCopy,
    Database,
    Destination,
    ProjectMember,
    Schedule,
    schedule_destinations,
)
from tests.api.client import Actor, Api


def root(api: Api) -> Path:
    return api.ctx.settings.backups_dir


async def project_of(api: Api, owner: Actor, name: str = "Shop") -> str:
    created = await api.post("/projects", as_=owner, json={"name": name})
    assert created.status == 201, created.body
    project_id: str = created.body["id"]
    return project_id


async def add_member(api: Api, project_id: str, user: Actor, role: ProjectRole) -> None:
    async with api.ctx.transaction() as session:
        session.add(ProjectMember(project_id=uuid.UUID(project_id), user_id=user.id, role=role))


def local(path: Path | str, name: str = "nas", **over: Any) -> dict[str, Any]:
    return {"kind": "local", "name": name, "path": str(path), **over}


async def test_default_destination_appears_on_first_use(api: Api) -> None:
    anyone = await api.user()
    listed = await api.get("/destinations", as_=anyone)
    assert listed.status == 200, listed.body
    [default] = listed.body["items"]
    expected = root(api).resolve() / "default"
    assert default["name"] == "local"
    assert (default["kind"], default["project_id"], default["is_default"]) == (
        "local",
        None,
        True,
    )
    assert default["path"] == str(expected)
    assert expected.is_dir()
    again = await api.get("/destinations", as_=anyone)
    assert [d["id"] for d in again.body["items"]] == [default["id"]]


async def test_default_comes_back_only_when_nothing_is_left(api: Api) -> None:
    admin = await api.user("root", admin=True)
    default = (await api.get("/destinations", as_=admin)).body["items"][0]
    other = await api.post("/destinations", as_=admin, json=local(root(api) / "other"))
    assert other.status == 201, other.body
    assert (await api.delete(f"/destinations/{default['id']}", as_=admin)).status == 204
    listed = await api.get("/destinations", as_=admin)
    assert [d["id"] for d in listed.body["items"]] == [other.body["id"]]


async def test_admin_creates_global_destinations_visible_to_all(api: Api) -> None:
    admin, alice = await api.user("root", admin=True), await api.user("alice")
    target = root(api) / "nightly" / "offsite"
    created = await api.post("/destinations", as_=admin, json=local(target, enabled=False))
    assert created.status == 201, created.body
    got = created.body
    assert (got["project_id"], got["enabled"], got["has_secret"], got["is_default"]) == (
        None,
        False,
        False,
        False,
    )
    assert got["path"] == str(target.resolve())
    assert target.is_dir()
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700

    assert (await api.get(f"/destinations/{got['id']}", as_=alice)).body == got
    assert got["id"] in {d["id"] for d in (await api.get("/destinations", as_=alice)).body["items"]}
    change = local(target, name="renamed")
    assert (await api.put(f"/destinations/{got['id']}", as_=alice, json=change)).status == 403
    assert (await api.delete(f"/destinations/{got['id']}", as_=alice)).status == 403
    refused = await api.post("/destinations", as_=alice, json=local(root(api) / "mine"))
    assert refused.status == 403
    assert "administrator" in refused.body["error"]["message"]


async def test_project_destinations_follow_project_roles(api: Api) -> None:
    owner, viewer, stranger = await api.user("o"), await api.user("v"), await api.user("s")
    project_id = await project_of(api, owner)
    await add_member(api, project_id, viewer, ProjectRole.VIEWER)
    created = await api.post(
        "/destinations", as_=owner, json=local(root(api) / "shop", project_id=project_id)
    )
    assert created.status == 201, created.body
    dest = created.body
    assert dest["project_id"] == project_id

    assert (await api.get(f"/destinations/{dest['id']}", as_=viewer)).status == 200
    seen_by_viewer = {d["id"] for d in (await api.get("/destinations", as_=viewer)).body["items"]}
    assert dest["id"] in seen_by_viewer
    change = local(root(api) / "shop", name="x")
    assert (await api.put(f"/destinations/{dest['id']}", as_=viewer, json=change)).status == 403
    assert (await api.delete(f"/destinations/{dest['id']}", as_=viewer)).status == 403
    denied = await api.post(
        "/destinations", as_=viewer, json=local(root(api) / "v", project_id=project_id)
    )
    assert denied.status == 403

    for method, kw in (("get", {}), ("put", {"json": change}), ("delete", {})):
        response = await getattr(api, method)(f"/destinations/{dest['id']}", as_=stranger, **kw)
        assert response.status == 404, (method, response.body)
    seen_by_stranger = {
        d["id"] for d in (await api.get("/destinations", as_=stranger)).body["items"]
    }
    assert dest["id"] not in seen_by_stranger
    hidden = await api.post(
        "/destinations", as_=stranger, json=local(root(api) / "s", project_id=project_id)
    )
    assert hidden.status == 404
    assert (
        await api.get("/destinations", as_=stranger, params={"project_id": project_id})
    ).status == 404


async def test_list_filters_by_project_and_kind(api: Api) -> None:
    admin, alice = await api.user("root", admin=True), await api.user("alice")
    first, second = await project_of(api, alice, "A"), await project_of(api, alice, "B")
    ids = {}
    for name, project in (("a", first), ("b", second)):
        body = local(root(api) / name, name=name, project_id=project)
        ids[name] = (await api.post("/destinations", as_=alice, json=body)).body["id"]
    ids["g"] = (await api.post("/destinations", as_=admin, json=local(root(api) / "g"))).body["id"]
    default = (await api.get("/destinations", as_=alice, params={"kind": "s3"})).body
    assert default["items"] == []
    usable = await api.get("/destinations", as_=alice, params={"project_id": first})
    names = {d["name"] for d in usable.body["items"]}
    assert names == {"a", "nas", "local"}  # its own plus the global ones
    everything = await api.get("/destinations", as_=alice, params={"limit": "2"})
    assert everything.body["total"] == 4
    assert len(everything.body["items"]) == 2
    assert everything.body["next_cursor"]


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("relative/dir", "absolute"),
        ("{root}/a/../../escape", "'..'"),
        ("{root}/a/..", "'..'"),
        ("/etc/backups", "allowed root"),
        ("{root}-sibling/x", "allowed root"),
        ("{root}/bad\nname", "control characters"),
        ("{root}/file.txt", "not a directory"),
        ("{root}/file.txt/below", "cannot be created"),
    ],
)
async def test_local_paths_must_stay_under_the_roots(api: Api, path: str, says: str) -> None:
    admin = await api.user("root", admin=True)
    root(api).mkdir(parents=True, exist_ok=True)
    (root(api) / "file.txt").write_text("x")
    bad = await api.post("/destinations", as_=admin, json=local(path.format(root=root(api))))
    assert bad.status == 422, bad.body
    assert says in bad.body["error"]["fields"]["path"]
    assert not Path(str(root(api)) + "-sibling").exists()


async def test_symlink_escape_is_refused(api: Api, tmp_path: Path) -> None:
    admin = await api.user("root", admin=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    root(api).mkdir(parents=True, exist_ok=True)
    (root(api) / "sneaky").symlink_to(outside, target_is_directory=True)
    for path in (root(api) / "sneaky", root(api) / "sneaky" / "deeper"):
        escaped = await api.post("/destinations", as_=admin, json=local(path))
        assert escaped.status == 422, escaped.body
        assert "after resolving symlinks" in escaped.body["error"]["fields"]["path"]
    assert list(outside.iterdir()) == []

    # A symlink that stays inside the root is fine; the real path is stored.
    (root(api) / "real").mkdir()
    (root(api) / "alias").symlink_to(root(api) / "real", target_is_directory=True)
    inside = await api.post("/destinations", as_=admin, json=local(root(api) / "alias"))
    assert inside.status == 201, inside.body
    assert inside.body["path"] == str((root(api) / "real").resolve())


async def test_overlapping_directories_are_refused(api: Api) -> None:
    admin = await api.user("root", admin=True)
    first = await api.post("/destinations", as_=admin, json=local(root(api) / "a" / "b"))
    assert first.status == 201
    for path in (root(api) / "a" / "b", root(api) / "a" / "b" / "c", root(api) / "a", root(api)):
        clash = await api.post("/destinations", as_=admin, json=local(path, name="other"))
        assert clash.status == 409, (path, clash.body)
        assert clash.body["error"]["fields"]["path"] == "overlaps another destination's directory"
    sibling = await api.post(
        "/destinations", as_=admin, json=local(root(api) / "a" / "c", name="c")
    )
    assert sibling.status == 201


async def test_unwritable_directory_is_refused(api: Api) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere: cannot make an unwritable directory")
    admin = await api.user("root", admin=True)
    locked = root(api) / "locked"
    locked.mkdir(parents=True)
    locked.chmod(0o500)
    try:
        refused = await api.post("/destinations", as_=admin, json=local(locked))
    finally:
        locked.chmod(0o700)
    assert refused.status == 422
    assert "not writable" in refused.body["error"]["fields"]["path"]


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"kind": "s3", "name": "b", "bucket": "my-bucket"}, "kind", "not supported yet"),
        (
            {"kind": "azure", "name": "z", "account_url": "https://a", "container": "box"},
            "kind",
            "not supported yet",
        ),
        ({"kind": "ftp", "name": "f"}, "kind", "unknown kind"),
        ({"name": "f", "path": "/x"}, "kind", "required"),
        ({"kind": "local", "name": "f"}, "path", "required"),
        ({"kind": "local", "name": "", "path": "/x"}, "name", "at least 1"),
        ({"kind": "local", "name": "f", "path": "/x", "secret": 1}, "secret", "unknown field"),
        ({"kind": "s3", "name": "b"}, "bucket", "required"),
        ({"kind": "local", "name": "f", "path": "/x", "project_id": "p"}, "project_id", "UUID"),
    ],
)
async def test_validation_errors_name_the_field(
    api: Api, body: dict[str, Any], field: str, says: str
) -> None:
    admin = await api.user("root", admin=True)
    bad = await api.post("/destinations", as_=admin, json=body)
    assert bad.status == 422, bad.body
    assert says in bad.body["error"]["fields"][field], bad.body


async def test_bodies_that_are_not_objects_are_422(api: Api) -> None:
    admin = await api.user("root", admin=True)
    bodies: list[Any] = [[], "local", 7, None]
    for body in bodies:
        response = await api.post("/destinations", as_=admin, json=body)
        assert response.status == 422, (body, response.body)


async def test_names_are_unique_per_scope(api: Api) -> None:
    admin, alice = await api.user("root", admin=True), await api.user("alice")
    project_id = await project_of(api, alice)
    assert (await api.post("/destinations", as_=admin, json=local(root(api) / "1"))).status == 201
    clash = await api.post("/destinations", as_=admin, json=local(root(api) / "2"))
    assert clash.status == 409
    assert "name" in clash.body["error"]["fields"]
    mine = local(root(api) / "3", project_id=project_id)
    assert (await api.post("/destinations", as_=alice, json=mine)).status == 201


async def test_update_renames_disables_and_moves_while_empty(api: Api) -> None:
    admin = await api.user("root", admin=True)
    dest = (await api.post("/destinations", as_=admin, json=local(root(api) / "one"))).body
    url = f"/destinations/{dest['id']}"
    moved = await api.put(url, as_=admin, json=local(root(api) / "two", name="n2", enabled=False))
    assert moved.status == 200, moved.body
    assert (moved.body["name"], moved.body["enabled"]) == ("n2", False)
    assert moved.body["path"] == str((root(api) / "two").resolve())
    assert (root(api) / "two").is_dir()
    kind = await api.put(url, as_=admin, json={"kind": "s3", "name": "n", "bucket": "bkt"})
    assert kind.status == 422
    assert kind.body["error"]["fields"]["kind"] == "must stay local"
    escape = await api.put(url, as_=admin, json=local(root(api) / ".." / "x"))
    assert escape.status == 422
    project = await api.put(url, as_=admin, json=local(root(api) / "two", project_id=None))
    assert project.status == 422
    assert project.body["error"]["fields"]["project_id"] == "unknown field"


async def seed_backup(api: Api, project_id: str, destination_id: str) -> None:
    async with api.ctx.transaction() as session:
        database = Database(
            project_id=uuid.UUID(project_id), name="db", engine="postgresql", host="h", port=1
        )
        session.add(database)
        await session.flush()
        backup = Backup(database_id=database.id, trigger=BackupTrigger.MANUAL)
        session.add(backup)
        await session.flush()
        session.add(
            BackupCopy(
                backup_id=backup.id, destination_id=uuid.UUID(destination_id), artifact_key="k"
            )
        )


async def test_in_use_destinations_cannot_be_deleted_or_moved(api: Api) -> None:
    alice = await api.user("alice")
    project_id = await project_of(api, alice)
    body = local(root(api) / "shop", project_id=project_id)
    dest = (await api.post("/destinations", as_=alice, json=body)).body
    url = f"/destinations/{dest['id']}"

    await seed_backup(api, project_id, dest["id"])
    moved = await api.put(url, as_=alice, json=local(root(api) / "elsewhere"))
    assert moved.status == 409
    assert "backups" in moved.body["error"]["message"]
    renamed = await api.put(url, as_=alice, json=local(root(api) / "shop", name="kept"))
    assert renamed.status == 200
    refused = await api.delete(url, as_=alice)
    assert refused.status == 409
    assert "backup(s) are stored here" in refused.body["error"]["message"]


async def test_destination_named_by_a_schedule_cannot_be_deleted(api: Api) -> None:
    alice = await api.user("alice")
    project_id = await project_of(api, alice)
    dest = (
        await api.post(
            "/destinations", as_=alice, json=local(root(api) / "s", project_id=project_id)
        )
    ).body
    async with api.ctx.transaction() as session:
        database = Database(
            project_id=uuid.UUID(project_id), name="db", engine="redis", host="h", port=1
        )
        session.add(database)
        await session.flush()
        schedule = Schedule(database_id=database.id, name="s", cron="@daily")
        session.add(schedule)
        await session.flush()
        await session.execute(
            insert(schedule_destinations).values(
                schedule_id=schedule.id, destination_id=uuid.UUID(dest["id"])
            )
        )
    refused = await api.delete(f"/destinations/{dest['id']}", as_=alice)
    assert refused.status == 409
    assert "schedule" in refused.body["error"]["message"]

    async with api.ctx.transaction() as session:
        await session.execute(schedule_destinations.delete())
    assert (await api.delete(f"/destinations/{dest['id']}", as_=alice)).status == 204
    assert (root(api) / "s").is_dir()  # the files stay
    async with api.ctx.transaction() as session:
        assert await session.get(Destination, uuid.UUID(dest["id"])) is None
