"""The database form: engine-specific fields and dump options, and the conversion
between the form's fields and the API's database models (the password is never put
back into a form)."""

from __future__ import annotations

from typing import Any

from services.api.pages.forms import Form
from services.common.db.enums import DatabaseEngine, TlsMode
from services.common.db.models import Database
from services.common.dump_options import ALLOWED, DumpOption, Kind

ENGINES = [
    ("postgresql", "PostgreSQL"),
    ("mysql", "MySQL"),
    ("mariadb", "MariaDB"),
    ("mongodb", "MongoDB"),
    ("redis", "Redis"),
]
ENGINE_LABELS = dict(ENGINES)
OPTION_GROUPS = {
    DatabaseEngine.POSTGRESQL: "postgresql",
    DatabaseEngine.MYSQL: "mysql",
    DatabaseEngine.MARIADB: "mysql",
    DatabaseEngine.MONGODB: "mongodb",
}
GROUP_ENGINES = {
    "postgresql": ["postgresql"],
    "mysql": ["mysql", "mariadb"],
    "mongodb": ["mongodb"],
}
TLS_MODES = [("", "Engine default"), *[(m.value, m.value) for m in TlsMode]]


def option_groups(
    engine: DatabaseEngine | None,
) -> list[tuple[str, str, list[str], list[DumpOption]]]:
    """The option fieldsets to show ``(group, label, engines, options)``: every
    engine's when creating (the script shows the chosen one's), else the engine's."""
    groups = []
    for group, engines in GROUP_ENGINES.items():
        if engine is None or OPTION_GROUPS.get(engine) == group:
            options = list(ALLOWED[DatabaseEngine(engines[0])].values())
            label = " / ".join(ENGINE_LABELS[e] for e in engines)
            groups.append((group, label, engines, options))
    return groups


def options_from_form(form: Form, engine: DatabaseEngine) -> dict[str, Any]:
    group = OPTION_GROUPS.get(engine)
    if group is None:
        return {}
    options: dict[str, Any] = {}
    for name, option in ALLOWED[engine].items():
        key = f"opt.{group}.{name}"
        if option.kind is Kind.FLAG:
            if form.checked(key):
                options[name] = True
        elif option.kind is Kind.NAME:
            if form.optional(key):
                options[name] = form.raw(key).strip()
        else:
            names = [n.strip() for n in form.raw(key).replace("\n", ",").split(",")]
            if any(names):
                options[name] = [n for n in names if n]
    return options


def options_to_form(database: Database) -> dict[str, str]:
    group = OPTION_GROUPS.get(database.engine)
    values: dict[str, str] = {}
    for name, value in (database.options or {}).items():
        key = f"opt.{group}.{name}"
        if value is True:
            values[key] = "on"
        elif isinstance(value, list):
            values[key] = ", ".join(str(v) for v in value)
        elif isinstance(value, str):
            values[key] = value
    return values


def renames(engine: DatabaseEngine | None) -> dict[str, str]:
    group = OPTION_GROUPS.get(engine) if engine else None
    if group is None:
        return {}
    return {f"options.{name}": f"opt.{group}.{name}" for name in ALLOWED[engine]}  # type: ignore[index]


def database_fields(form: Form, engine: DatabaseEngine | None) -> dict[str, Any]:
    port = form.optional("port")
    return {
        "name": form.raw("name"),
        "host": form.raw("host").strip(),
        "port": port,
        "database_name": form.optional("database_name"),
        "username": form.raw("username").strip(),
        "password": form.raw("password") or None,
        "tls_mode": form.optional("tls_mode"),
        "options": options_from_form(form, engine) if engine else {},
    }


def engine_of(form: Form) -> DatabaseEngine | None:
    try:
        return DatabaseEngine(form.raw("engine"))
    except ValueError:
        return None
