"""Mapped imports: a SQLite database of another schema, fed into this project's models.

A mapping is a TOML file. Each `[[tables]]` entry names a source table and the model it
feeds; `[tables.fields]` gives, per model field, where its value comes from:

    name = "food_name"                                      # a source column (rename)
    is_active = { constant = true }                         # a constant
    is_staff = { from = "is_admin", transform = "boolean" } # 0/1 to a boolean
    eaten_at = { from = "logged_at", transform = "naive_datetime" }   # in --source-timezone,
                                                            # or timezone = "Europe/Berlin"
    protein = { from = "protein", transform = "decimal", on_rounding = "refuse" }  # or "round"
    meal = { from = "meal_type", default = "" }             # NULL becomes ""
    password = { from = "password_hash", transform = "password_hash", hasher = "werkzeug" }

A field the mapping leaves out gets the model field's default (an error when it has none).
`skip = ["alembic_version"]` lists source tables that are deliberately not imported; every
other unmapped source table is reported as skipped too, never silently. Each value becomes a
SQL expression over the source row, so the import's checks, COPY and checksums work on the
mapped values exactly as on a native import.
"""

from __future__ import annotations

import datetime
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.apps import apps
from django.core.exceptions import FieldDoesNotExist
from django.db import models

from dbops import conf
from dbops.sqlite_import.plan import Column, TablePlan, table_plan

TRANSFORMS = {"boolean", "naive_datetime", "decimal", "password_hash"}
HASHER_PREFIXES = {"werkzeug": "werkzeug$"}


class MappingError(Exception):
    """The mapping itself is wrong; raised before any row is read."""


@dataclass
class Mapping:
    name: str
    path: Path
    description: str
    tables: list[dict]
    skip: list[str]


def builtin_mappings() -> dict[str, Path]:
    configured = conf.IMPORT_MAPPINGS
    return {name: Path(path) for name, path in configured.items()}


def load_mapping(name_or_path: str) -> Mapping:
    """A built-in mapping by name, or a TOML file by path."""
    builtin = builtin_mappings()
    path = builtin.get(name_or_path) or Path(name_or_path).expanduser()
    if not path.is_file():
        known = ", ".join(sorted(builtin)) or "none"
        raise MappingError(
            f"--mapping {name_or_path}: neither a built-in mapping (known: {known}) nor a file"
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise MappingError(f"{path}: not valid TOML ({exc})") from None
    tables = data.get("tables")
    if not isinstance(tables, list) or not tables:
        raise MappingError(f"{path}: needs at least one [[tables]] entry")
    for index, table in enumerate(tables, start=1):
        for key in ("source", "model"):
            if not isinstance(table.get(key), str):
                raise MappingError(f"{path}: [[tables]] entry {index} needs '{key}' (text)")
        if not isinstance(table.get("fields", {}), dict):
            raise MappingError(f"{path}: [[tables]] entry {index}: 'fields' must be a table")
    skip = data.get("skip", [])
    if not isinstance(skip, list) or not all(isinstance(item, str) for item in skip):
        raise MappingError(f"{path}: 'skip' must be a list of table names")
    return Mapping(
        name=data.get("name", path.stem),
        path=path,
        description=data.get("description", ""),
        tables=tables,
        skip=skip,
    )


def resolve_models(mapping: Mapping) -> list[tuple[dict, type[models.Model]]]:
    """Check every model and field the mapping names (this needs no source)."""
    resolved, problems = [], []
    for table in mapping.tables:
        try:
            model = apps.get_model(table["model"])
        except (LookupError, ValueError):
            problems.append(f"{mapping.path}: no model {table['model']} (expected app.Model)")
            continue
        for field_name in table.get("fields", {}):
            try:
                field = model._meta.get_field(field_name)
            except FieldDoesNotExist:
                problems.append(f"{mapping.path}: {table['model']} has no field '{field_name}'")
                continue
            if not field.concrete or field.many_to_many:
                problems.append(
                    f"{mapping.path}: {table['model']}.{field_name} is not a column to fill"
                )
        resolved.append((table, model))
    if problems:
        raise MappingError("; ".join(problems))
    return resolved


def mapped_plans(
    mapping: Mapping, source_tables: dict[str, list[str]], source_timezone: str
) -> tuple[list[TablePlan], list[str]]:
    """Plans for the mapped tables, and the source tables left out (for the report)."""
    timezone = _zone(source_timezone, "--source-timezone")
    plans, problems = [], []
    for table, model in resolve_models(mapping):
        source = table["source"]
        if source not in source_tables:
            problems.append(f"{mapping.path}: the source has no table '{source}'")
            continue
        try:
            plans.append(_plan(table, model, source_tables[source], timezone, mapping.path))
        except MappingError as exc:
            problems.append(str(exc))
    if problems:
        raise MappingError("; ".join(problems))
    mapped = {table["source"] for table in mapping.tables}
    skipped = sorted(name for name in source_tables if name not in mapped)
    return plans, skipped


def _plan(table, model, source_columns, timezone, path) -> TablePlan:
    plan = table_plan(model)
    specs = table.get("fields", {})
    columns = []
    for column in plan.columns:
        field = column.field
        spec = specs.get(field.name, specs.get(field.attname))
        where = f"{path}: {table['source']} → {model._meta.label}.{field.name}"
        columns.append(_mapped_column(column, spec, source_columns, timezone, where))
    # The model's CHECK constraints name its columns, not the mapping's expressions: PostgreSQL
    # enforces them during the copy (a clean rollback), not preflight.
    return replace(plan, columns=columns, source_table=table["source"], replaced=False, checks=[])


def _mapped_column(column: Column, spec, source_columns, timezone, where) -> Column:
    if spec is None:
        return replace(column, source_sql=_default_sql(column.field, where))
    if isinstance(spec, str):
        spec = {"from": spec}
    if not isinstance(spec, dict):
        raise MappingError(f"{where}: expected a column name or a table, got {spec!r}")
    if "constant" in spec:
        return replace(column, source_sql=_literal(spec["constant"], where))
    source = spec.get("from")
    if source not in source_columns:
        raise MappingError(f"{where}: the source table has no column '{source}'")
    expression = _quote(source)
    transform = spec.get("transform")
    if transform is not None and transform not in TRANSFORMS:
        raise MappingError(
            f"{where}: unknown transform '{transform}' (known: {', '.join(sorted(TRANSFORMS))})"
        )
    if "default" in spec:
        expression = f"coalesce({expression}, {_literal(spec['default'], where)})"
    if transform == "naive_datetime":
        return _naive_datetime(column, expression, spec, timezone, where)
    if transform == "decimal":
        return _decimal(column, expression, spec, where)
    if transform == "password_hash":
        hasher = spec.get("hasher", "")
        if hasher not in HASHER_PREFIXES:
            raise MappingError(f"{where}: unknown hasher '{hasher}' (known: werkzeug)")
        # No hash: an unusable password ('!' prefix, as Django writes), one per row.
        expression = (
            f"CASE WHEN {expression} IS NULL OR {expression} = '' "
            f"THEN '!no-password-imported-' || rowid "
            f"ELSE '{HASHER_PREFIXES[hasher]}' || {expression} END"
        )
    return replace(column, source_sql=expression)


def _naive_datetime(column, expression, spec, timezone, where) -> Column:
    if column.kind != "DateTimeField":
        raise MappingError(f"{where}: naive_datetime feeds a DateTimeField only")
    zone = _zone(spec["timezone"], where) if "timezone" in spec else timezone
    if zone.key == "UTC":
        return replace(column, source_sql=expression)
    # PostgreSQL reads the zone name in the COPY text and applies its rules (DST included);
    # the checksum converts independently, in Python, with the same zone.
    return replace(
        column,
        source_sql=expression,
        copy_template=f"{{c}} || ' {zone.key}'",
        python_normalizer=_utc_text_in(zone),
    )


def _utc_text_in(zone: ZoneInfo):
    def normalize(value) -> str:
        text = value.decode() if isinstance(value, bytes) else str(value)
        local = datetime.datetime.fromisoformat(text).replace(tzinfo=zone)
        utc = local.astimezone(datetime.UTC).replace(tzinfo=None).isoformat(sep=" ")
        # As PostgreSQL prints it: the fraction of a second without its trailing zeros.
        return utc.rstrip("0").rstrip(".") if "." in utc else utc

    return normalize


def _decimal(column, expression, spec, where) -> Column:
    if column.kind != "DecimalField":
        raise MappingError(f"{where}: decimal feeds a DecimalField only")
    places = column.field.decimal_places
    if spec.get("places", places) != places:
        raise MappingError(f"{where}: places = {spec['places']}, but the field has {places}")
    on_rounding = spec.get("on_rounding", "refuse")
    if on_rounding == "refuse":
        return replace(column, source_sql=expression)
    if on_rounding != "round":
        raise MappingError(f"{where}: on_rounding must be 'refuse' or 'round'")
    # Only numbers are rounded: SQLite's round() turns text into a number ('n/a' into 0.0),
    # so text is left for the decimal checks to refuse.
    rounded = (
        f"CASE WHEN typeof({expression}) IN ('integer', 'real') "
        f"THEN round({expression}, {places}) ELSE {expression} END"
    )
    return replace(column, source_sql=rounded)


def _default_sql(field: models.Field, where: str) -> str:
    if field.has_default():
        return _literal(field.get_default(), where)
    if field.null:
        return "NULL"
    if field.empty_strings_allowed and field.blank:
        return "''"
    raise MappingError(f"{where}: the mapping gives no value and the field has no default")


def _literal(value, where: str) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.UTC).replace(tzinfo=None)
        return _literal(value.isoformat(sep=" ", timespec="microseconds"), where)
    if isinstance(value, datetime.date):
        return _literal(value.isoformat(), where)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise MappingError(f"{where}: cannot use {value!r} as a constant")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _zone(name: str, where: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise MappingError(f"{where}: unknown time zone '{name}'") from None


def looks_like(mapping: Mapping, source_tables: dict[str, list[str]]) -> bool:
    """Whether a source has every table (and mapped column) this mapping reads."""
    for table in mapping.tables:
        columns = source_tables.get(table["source"])
        if columns is None:
            return False
        for spec in table.get("fields", {}).values():
            source = spec if isinstance(spec, str) else spec.get("from")
            if source is not None and source not in columns:
                return False
    return True
