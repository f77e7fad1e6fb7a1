"""Extra dump options a person may set on a database: a closed allow-list per engine.

Nothing a user types ever reaches a dump tool as free-form argv. Each engine has a
fixed set of named options; each option has a type (a flag, one name, or a list of
names), a rule its names must follow (never starting with ``-``, no whitespace or
control characters), and one way it maps to the tool's argv — always the
``--flag=value`` form, so a value can never be read as another option.

The API validates with :func:`validate_options` before storing; the executor builds
argv with :func:`dump_argv`, which validates again (a stored row is input too).

    >>> dump_argv(DatabaseEngine.POSTGRESQL, {"exclude_schemas": ["audit"]}, database="shop")
    DumpArgv(flags=('--exclude-schema=audit',), names=())
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from services.common.db.enums import DatabaseEngine
from services.common.errors import BackupManagerError

MAX_NAMES = 100
"""At most this many names in one list option."""

OptionValue = bool | str | list[str]


class DumpOptionsInvalid(BackupManagerError):
    """Some options are unknown or badly formed; ``fields`` maps option name to why."""

    code = "dump_options_invalid"

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(f"{name}: {why}" for name, why in fields.items()))
        self.fields = fields


class Kind(StrEnum):
    FLAG = "flag"
    """``true`` adds the flag; ``false`` leaves the tool's default."""
    NAME = "name"
    """One name: ``--flag=name``."""
    NAMES = "names"
    """A list of names: ``--flag=name`` once per name."""


@dataclass(frozen=True)
class NameRule:
    """What a name (or pattern) of an option may look like."""

    pattern: re.Pattern[str]
    explain: str

    def check(self, value: str) -> str | None:
        """Why ``value`` is not acceptable, or None."""
        if not value:
            return "must not be empty"
        if value.startswith("-"):
            return "must not start with '-'"
        if not self.pattern.fullmatch(value):
            return f"{value!r} is not allowed: {self.explain}"
        return None


# PostgreSQL: pg_dump patterns (name, schema.name, with * and ? wildcards, and
# double quotes for mixed case).
PG_PATTERN = NameRule(
    re.compile(r'[\w$*?."]{1,200}'),
    'use letters, digits, _ $ . " and the wildcards * ? (at most 200 characters)',
)
# MySQL / MariaDB table names (no wildcards: mysqldump takes exact names).
MYSQL_TABLE = NameRule(
    re.compile(r"[\w$-]{1,64}"), "use letters, digits, _ $ - (at most 64 characters)"
)
MONGO_COLLECTION = NameRule(
    re.compile(r"(?!system\.)[\w.-]{1,120}"),
    "use letters, digits, _ . - (at most 120 characters, not a system. collection)",
)
MONGO_DATABASE = NameRule(
    re.compile(r"[\w-]{1,63}"), "use letters, digits, _ - (at most 63 characters)"
)


@dataclass(frozen=True)
class DumpOption:
    name: str
    kind: Kind
    flag: str
    """The tool's long option, e.g. ``--exclude-schema``."""
    description: str
    rule: NameRule | None = None
    qualify: bool = False
    """Prefix each name with ``<database>.`` (mysqldump's ``--ignore-table``)."""
    positional: bool = False
    """Names go after the database name instead of into flags (mysqldump's tables)."""
    excludes: tuple[str, ...] = ()
    """Options that cannot be combined with this one."""

    def check(self, value: object) -> OptionValue:
        """The value, if it has this option's type and its names follow the rule;
        raises ``ValueError`` (with a message safe to show) otherwise."""
        if self.kind is Kind.FLAG:
            if not isinstance(value, bool):
                raise ValueError("must be true or false")
            return value
        if self.kind is Kind.NAME:
            if not isinstance(value, str):
                raise ValueError("must be a string")
            self._check_name(value)
            return value
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ValueError("must be a list of strings")
        if len(value) > MAX_NAMES:
            raise ValueError(f"at most {MAX_NAMES} names")
        for item in value:
            self._check_name(item)
        return list(dict.fromkeys(value))

    def _check_name(self, value: str) -> None:
        assert self.rule is not None
        why = self.rule.check(value)
        if why is not None:
            raise ValueError(why)

    def argv(self, value: OptionValue, database: str) -> list[str]:
        """The tool arguments for an already checked value (flags, or names when
        ``positional``)."""
        if isinstance(value, bool):
            return [self.flag] if value else []
        names = [value] if isinstance(value, str) else list(value)
        if self.qualify:
            names = [f"{database}.{name}" for name in names]
        if self.positional:
            return names
        return [f"{self.flag}={name}" for name in names]


def _options(*options: DumpOption) -> dict[str, DumpOption]:
    return {option.name: option for option in options}


_PG = _options(
    DumpOption(
        "schemas", Kind.NAMES, "--schema", "Dump only these schemas (patterns)", PG_PATTERN,
        excludes=("tables",),
    ),
    DumpOption(
        "exclude_schemas", Kind.NAMES, "--exclude-schema", "Skip these schemas (patterns)",
        PG_PATTERN, excludes=("tables",),
    ),
    DumpOption("tables", Kind.NAMES, "--table", "Dump only these tables (patterns)", PG_PATTERN),
    DumpOption(
        "exclude_tables", Kind.NAMES, "--exclude-table", "Skip these tables (patterns)", PG_PATTERN
    ),
    DumpOption(
        "exclude_table_data", Kind.NAMES, "--exclude-table-data",
        "Dump these tables' definitions but not their rows (patterns)", PG_PATTERN,
    ),
    DumpOption("no_owner", Kind.FLAG, "--no-owner", "Do not record object ownership"),
    DumpOption(
        "no_privileges", Kind.FLAG, "--no-privileges", "Do not dump GRANT/REVOKE privileges"
    ),
)  # fmt: skip

_MYSQL = _options(
    DumpOption(
        "tables", Kind.NAMES, "", "Dump only these tables", MYSQL_TABLE, positional=True
    ),
    DumpOption(
        "exclude_tables", Kind.NAMES, "--ignore-table", "Skip these tables", MYSQL_TABLE,
        qualify=True,
    ),
    DumpOption("no_data", Kind.FLAG, "--no-data", "Dump table definitions only, no rows"),
    DumpOption("routines", Kind.FLAG, "--routines", "Also dump stored procedures and functions"),
    DumpOption("events", Kind.FLAG, "--events", "Also dump scheduled events"),
)  # fmt: skip

_MONGO = _options(
    DumpOption(
        "collection", Kind.NAME, "--collection", "Dump only this collection", MONGO_COLLECTION,
        excludes=("exclude_collections",),
    ),
    DumpOption(
        "exclude_collections", Kind.NAMES, "--excludeCollection", "Skip these collections",
        MONGO_COLLECTION,
    ),
    DumpOption(
        "authentication_database", Kind.NAME, "--authenticationDatabase",
        "Database holding the user's credentials (default: admin)", MONGO_DATABASE,
    ),
)  # fmt: skip

ALLOWED: Mapping[DatabaseEngine, Mapping[str, DumpOption]] = {
    DatabaseEngine.POSTGRESQL: _PG,
    DatabaseEngine.MYSQL: _MYSQL,
    DatabaseEngine.MARIADB: _MYSQL,
    DatabaseEngine.MONGODB: _MONGO,
    DatabaseEngine.REDIS: {},
}
"""Every option each engine accepts (Redis: none; an RDB snapshot has no choices)."""


def validate_options(
    engine: DatabaseEngine, options: Mapping[str, object]
) -> dict[str, OptionValue]:
    """The options, checked against the engine's allow-list (list names deduplicated);
    raises :class:`DumpOptionsInvalid` naming every bad option."""
    allowed = ALLOWED[engine]
    errors: dict[str, str] = {}
    checked: dict[str, OptionValue] = {}
    for name, value in options.items():
        option = allowed.get(name)
        if option is None:
            choices = ", ".join(allowed) or "none"
            errors[name] = f"unknown option for {engine.value} (allowed: {choices})"
            continue
        try:
            checked[name] = option.check(value)
        except ValueError as exc:
            errors[name] = str(exc)
    for name in checked:
        for other in allowed[name].excludes:
            if other in checked and checked[name] and checked[other]:
                errors.setdefault(name, f"cannot be combined with {other}")
    if errors:
        raise DumpOptionsInvalid(errors)
    return checked


@dataclass(frozen=True)
class DumpArgv:
    """What the options add to a dump command."""

    flags: tuple[str, ...]
    """Options, each a single ``--flag`` or ``--flag=value`` argument."""
    names: tuple[str, ...]
    """Positional names to put right after the database name (mysqldump's tables)."""


def dump_argv(engine: DatabaseEngine, options: Mapping[str, object], *, database: str) -> DumpArgv:
    """The argv the options stand for, in a stable order (the allow-list's)."""
    checked = validate_options(engine, options)
    flags: list[str] = []
    names: list[str] = []
    for name, option in ALLOWED[engine].items():
        if name not in checked:
            continue
        parts = option.argv(checked[name], database)
        (names if option.positional else flags).extend(parts)
    return DumpArgv(tuple(flags), tuple(names))
