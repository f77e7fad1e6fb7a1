"""The per-engine allow-list of dump options: what is accepted, what argv it becomes,
and that nothing a user types can turn into another option."""

from __future__ import annotations

from typing import Any

import pytest

from services.common.db.enums import DatabaseEngine
from services.common.dump_options import (
    ALLOWED,
    MAX_NAMES,
    DumpArgv,
    DumpOptionsInvalid,
    Kind,
    dump_argv,
    validate_options,
)

PG = DatabaseEngine.POSTGRESQL
MYSQL = DatabaseEngine.MYSQL
MARIADB = DatabaseEngine.MARIADB
MONGO = DatabaseEngine.MONGODB
REDIS = DatabaseEngine.REDIS


@pytest.mark.parametrize(
    ("engine", "options", "flags", "names"),
    [
        (PG, {}, (), ()),
        (PG, {"no_owner": True, "no_privileges": False}, ("--no-owner",), ()),
        (
            PG,
            {"exclude_schemas": ["audit", "tmp_*"], "exclude_table_data": ["public.logs"]},
            ("--exclude-schema=audit", "--exclude-schema=tmp_*",
             "--exclude-table-data=public.logs"),
            (),
        ),
        (
            PG,
            {"exclude_tables": ['"Big"'], "tables": ["public.orders", "public.items?"]},
            ("--table=public.orders", "--table=public.items?", '--exclude-table="Big"'),
            (),
        ),
        (PG, {"schemas": ["sales", "sales"]}, ("--schema=sales",), ()),
        (
            MYSQL,
            {"tables": ["orders", "items"], "exclude_tables": ["sessions"], "no_data": True},
            ("--ignore-table=shop.sessions", "--no-data"),
            ("orders", "items"),
        ),
        (MARIADB, {"routines": True, "events": True}, ("--routines", "--events"), ()),
        (
            MONGO,
            {"collection": "orders", "authentication_database": "admin"},
            ("--collection=orders", "--authenticationDatabase=admin"),
            (),
        ),
        (MONGO, {"exclude_collections": ["logs", "tmp.cache"]},
         ("--excludeCollection=logs", "--excludeCollection=tmp.cache"), ()),
        (REDIS, {}, (), ()),
    ],
)  # fmt: skip
def test_options_become_argv(
    engine: DatabaseEngine,
    options: dict[str, Any],
    flags: tuple[str, ...],
    names: tuple[str, ...],
) -> None:
    assert dump_argv(engine, options, database="shop") == DumpArgv(flags, names)


@pytest.mark.parametrize(
    ("engine", "options", "field", "says"),
    [
        (PG, {"jobs": 4}, "jobs", "unknown option for postgresql (allowed: schemas,"),
        (PG, {"argv": ["--file=/etc/passwd"]}, "argv", "unknown option"),
        (REDIS, {"no_owner": True}, "no_owner", "allowed: none"),
        (MYSQL, {"no_owner": True}, "no_owner", "unknown option for mysql"),
        (PG, {"no_owner": "true"}, "no_owner", "true or false"),
        (PG, {"no_owner": 1}, "no_owner", "true or false"),
        (PG, {"tables": "orders"}, "tables", "list of strings"),
        (PG, {"tables": [1]}, "tables", "list of strings"),
        (PG, {"tables": ["-f/tmp/x"]}, "tables", "must not start with '-'"),
        (PG, {"tables": ["--file=/tmp/x"]}, "tables", "must not start with '-'"),
        (PG, {"tables": [""]}, "tables", "must not be empty"),
        (PG, {"tables": ["a b"]}, "tables", "not allowed"),
        (PG, {"tables": ["a;drop"]}, "tables", "not allowed"),
        (PG, {"tables": ["a\n"]}, "tables", "not allowed"),
        (PG, {"tables": ["x" * 201]}, "tables", "not allowed"),
        (PG, {"tables": [f"t{i}" for i in range(MAX_NAMES + 1)]}, "tables", "at most"),
        (PG, {"schemas": ["s"], "tables": ["t"]}, "schemas", "cannot be combined with tables"),
        (MYSQL, {"tables": ["a*"]}, "tables", "not allowed"),
        (MYSQL, {"exclude_tables": ["db.t"]}, "exclude_tables", "not allowed"),
        (MONGO, {"collection": ["a"]}, "collection", "must be a string"),
        (MONGO, {"collection": "system.users"}, "collection", "not allowed"),
        (MONGO, {"collection": "a", "exclude_collections": ["b"]}, "collection", "combined"),
        (MONGO, {"authentication_database": "ad min"}, "authentication_database", "not allowed"),
    ],
)
def test_bad_options_are_named(
    engine: DatabaseEngine, options: dict[str, Any], field: str, says: str
) -> None:
    with pytest.raises(DumpOptionsInvalid) as caught:
        validate_options(engine, options)
    assert says in caught.value.fields[field]
    with pytest.raises(DumpOptionsInvalid):
        dump_argv(engine, options, database="shop")  # stored rows are checked again


def test_every_bad_option_is_reported_at_once() -> None:
    with pytest.raises(DumpOptionsInvalid) as caught:
        validate_options(PG, {"jobs": 2, "no_owner": "x", "tables": ["-x"], "schemas": ["ok"]})
    assert set(caught.value.fields) == {"jobs", "no_owner", "tables"}
    assert "jobs" in str(caught.value)


def test_empty_exclusive_options_do_not_conflict() -> None:
    assert validate_options(PG, {"schemas": [], "tables": ["t"]}) == {
        "schemas": [],
        "tables": ["t"],
    }


def test_every_value_argument_is_one_flag_with_equals() -> None:
    """Whatever passes validation is a single ``--flag=value`` (or a positional name
    that cannot look like an option): a value never becomes an option of its own."""
    for engine, options in ALLOWED.items():
        for name, option in options.items():
            if option.kind is Kind.FLAG:
                value: Any = True
            elif option.kind is Kind.NAME:
                value = "x1"
            else:
                value = ["x1", "y2"]
            argv = dump_argv(engine, {name: value}, database="db")
            for arg in argv.flags:
                assert arg.startswith("--"), (engine, name, arg)
                assert arg == option.flag or arg.startswith(option.flag + "=")
            for positional in argv.names:
                assert not positional.startswith("-")


def test_mysql_and_mariadb_share_one_list() -> None:
    assert ALLOWED[MYSQL] is ALLOWED[MARIADB]
    assert set(ALLOWED) == set(DatabaseEngine)
