"""One rule per kind of column: everything the import knows about it, in one place.

A rule says how a SQLite value of that kind is checked, how it becomes COPY text, and what its
canonical text is on each side of the checksum: in SQLite's SQL (or in Python, where SQLite
cannot print it the way PostgreSQL does) and in PostgreSQL's SQL. The COPY text and the two
canonical texts are separate expressions on purpose, so a wrong conversion shows up as a
checksum mismatch instead of being repeated on both sides.

SQLite enforces almost nothing (GUIDE section 4), so every column gets checks, and the checks
and the conversion run *inside SQLite*, as SQL: a million rows are checked in one scan and
turned into COPY text without a Python call per value. The few values SQL cannot judge
(decimals kept as text, IP addresses) are re-checked in Python, only for the rows SQL points
at. Which rule a field gets is decided in one function, `rule_for`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from django.db import models

from dbops.sqlite_import.django_internals import column_types
from dbops.sqlite_import.python_values import (
    _recheck_decimal,
    _recheck_ip,
    float_canonical,
    ip_canonical,
    json_canonical,
)

NULL = "\\N"


class UnsupportedField(Exception):
    """A field whose column the import cannot copy, and what to do about it."""

    def __init__(self, field, kind: str, postgresql_type: str | None, sqlite_type: str | None):
        self.field = field
        label = field.model._meta.label
        where = f"a {postgresql_type} column in PostgreSQL" if postgresql_type else "no column type"
        if postgresql_type and sqlite_type and postgresql_type != sqlite_type:
            where += f", {sqlite_type} in SQLite: it differs by backend"
        super().__init__(f"{label}.{field.name}: {kind} ({where}) is not supported")


@dataclass(frozen=True)
class Check:
    """A SQL test of a non-NULL value: `ok` is true for a good value, `bad` for a bad one.

    With `recheck`, rows failing the SQL test are only suspects: a Python function decides,
    returning the reason for a bad value or None for a good one.
    """

    reason: str
    ok: str = ""
    bad: str = ""
    recheck: Callable[[object], str | None] | None = None

    def bad_sql(self, column: str) -> str:
        """SQL true exactly for the rows this check rejects (or suspects)."""
        if self.bad:
            return f"{column} IS NOT NULL AND ({self.bad.format(c=column)})"
        return f"{column} IS NOT NULL AND NOT coalesce(({self.ok.format(c=column)}), 0)"


NUL_IN_TEXT = Check(
    "contains a NUL character, which PostgreSQL text cannot hold",
    bad="instr(CAST({c} AS BLOB), x'00') > 0",
)


@dataclass(frozen=True)
class Rule:
    """How one kind of column is checked, copied and compared. Templates take `{c}`."""

    kind: str
    checks: tuple[Check, ...]
    copy: str = "CAST({c} AS TEXT)"  # SQLite: the value as COPY's text format reads it
    canonical: str = "CAST({c} AS TEXT)"  # SQLite: its canonical text, unless in Python
    python_canonical: Callable[[object], str] | None = None
    postgresql: str = "{c}"  # PostgreSQL: a value whose COPY TO output is the canonical text
    postgresql_text: str = "{c}::text"  # ... and the same as text (for row digests)
    reads_text: bool = True  # text may arrive: scanned for NUL characters
    is_text: bool = False  # a string kind: its text must be valid UTF-8

    @property
    def canonical_is_the_value(self) -> bool:
        """Its canonical text is the value itself, any text, '\\N' included."""
        return self.is_text and self.python_canonical is None


# --------------------------------------------------------------------------- checks in SQL


def fraction_ok(whole: int) -> str:
    """SQL true when a value's first `whole` characters are all there is, or are followed by
    a '.' and 1 to 6 digits.

    Django writes six digits or none. That case is one GLOB without a '*', which SQLite matches
    several times faster than scanning for a non-digit (that scan was a third of the cost of
    checking a datetime).
    """
    six_digits = "?" * whole + "." + "[0-9]" * 6
    return (
        f"CASE length({{c}}) WHEN {whole} THEN 1 WHEN {whole + 7} THEN {{c}} GLOB '{six_digits}' "
        f"ELSE length({{c}}) BETWEEN {whole + 2} AND {whole + 6} "
        f"AND substr({{c}}, {whole + 1}, 1) = '.' "
        f"AND substr({{c}}, {whole + 2}) NOT GLOB '*[^0-9]*' END"
    )


def without_trailing_zeros(whole: int) -> str:
    """SQL of a checked datetime or time as PostgreSQL prints it in the ISO DateStyle: the
    fraction of a second without its trailing zeros, and without the '.' when it is zero."""
    return f"CASE length({{c}}) WHEN {whole} THEN {{c}} ELSE rtrim(rtrim({{c}}, '0'), '.') END"


# Django's SQLite format for aware datetimes: naive UTC text, microseconds optional. The
# '+0 days' modifier makes SQLite normalise, so 2025-02-30 no longer equals itself; only the
# whole seconds go through datetime(), which would round microseconds.
# SQLite's date functions know a year 0000, which PostgreSQL refuses: years start at 0001. (A
# GLOB, not `>= '0001'`, which a column of NUMERIC affinity would compare with the number 1.)
DATETIME_OK = (
    "typeof({c}) = 'text' AND datetime(substr({c}, 1, 19), '+0 days') IS substr({c}, 1, 19) "
    f"AND {{c}} NOT GLOB '0000*' AND {fraction_ok(19)}"
)
DATE_OK = (
    "typeof({c}) = 'text' AND length({c}) = 10 AND date({c}, '+0 days') IS {c} "
    "AND {c} NOT GLOB '0000*'"
)
TIME_OK = (
    "typeof({c}) = 'text' AND {c} GLOB '[0-9][0-9]:[0-9][0-9]:[0-9][0-9]*' "
    f"AND time(substr({{c}}, 1, 8), '+0 seconds') IS substr({{c}}, 1, 8) AND {fraction_ok(8)}"
)


def text_checks(max_length: int | None) -> tuple[Check, ...]:
    checks = (Check("not text", "typeof({c}) = 'text'"),)
    if max_length is not None:
        checks += (
            Check(f"longer than max_length {max_length}", bad=f"length({{c}}) > {max_length}"),
        )
    return checks


# --------------------------------------------------------------------------- the rules

INTEGER_RANGES = {
    "SmallIntegerField": (-(2**15), 2**15 - 1),
    "IntegerField": (-(2**31), 2**31 - 1),
    "BigIntegerField": (-(2**63), 2**63 - 1),
    "PositiveSmallIntegerField": (0, 2**15 - 1),
    "PositiveIntegerField": (0, 2**31 - 1),
    "PositiveBigIntegerField": (0, 2**63 - 1),
}
AUTO_FIELD_KINDS = {
    "AutoField": "IntegerField",
    "BigAutoField": "BigIntegerField",
    "SmallAutoField": "SmallIntegerField",
}
SQLITE_INTEGER_RANGE = (-(2**63), 2**63 - 1)
STRING_KINDS = {
    "CharField",
    "TextField",
    "EmailField",
    "SlugField",
    "URLField",
    "FilePathField",
    "FileField",
    "ImageField",
}


def integer_rule(kind: str) -> Rule:
    low, high = INTEGER_RANGES[kind]
    checks = (Check("not an integer", "typeof({c}) = 'integer'"),)
    if (low, high) != SQLITE_INTEGER_RANGE:  # a SQLite integer always fits 64 bits
        checks += (
            Check(
                f"out of range {low}..{high}",
                f"typeof({{c}}) != 'integer' OR {{c}} BETWEEN {low} AND {high}",
            ),
        )
    return Rule(kind, checks, reads_text=False)


def decimal_rule(digits: int, places: int) -> Rule:
    checks = (
        Check(
            "text in a decimal column",
            "typeof({c}) IN ('integer', 'real')",
            recheck=_recheck_decimal(digits, places),
        ),
        Check(
            f"more than {places} decimal places",
            bad=f"typeof({{c}}) = 'real' AND CAST(printf('%.{places}f', {{c}}) AS REAL) != {{c}}",
        ),
        Check(
            f"more than {digits - places} digits before the decimal point",
            bad=f"typeof({{c}}) IN ('integer', 'real') AND abs({{c}}) >= 1e{digits - places}",
        ),
    )
    # COPY: SQLite prints a REAL with 15 significant digits ('12.5'), which PostgreSQL scales
    # to the column's places; preflight has made sure no value needs rounding. The canonical
    # text is printed at the column's scale instead ('12.50', as PostgreSQL does): a different
    # path from the COPY text, so a wrong conversion cannot hide.
    canonical = f"CASE typeof({{c}}) WHEN 'text' THEN {{c}} ELSE printf('%.{places}f', {{c}}) END"
    return Rule("DecimalField", checks, canonical=canonical, reads_text=False)


def string_rule(kind: str, max_length: int | None) -> Rule:
    return Rule(kind, text_checks(max_length), copy="{c}", canonical="{c}", is_text=True)


DATETIME_RULE = Rule(
    "DateTimeField",
    (Check("not a datetime in Django's SQLite format", DATETIME_OK),),
    copy="{c} || '+00'",
    canonical=without_trailing_zeros(19),
    # As PostgreSQL prints it in the ISO DateStyle (set for the checksum): to_char() cost a
    # third of the checksum of a table with two datetimes.
    postgresql="({c} AT TIME ZONE 'UTC')",
)
DATE_RULE = Rule("DateField", (Check("not a date", DATE_OK),), copy="{c}", canonical="{c}")
TIME_RULE = Rule(
    "TimeField",
    (Check("not a time", TIME_OK),),
    copy="{c}",
    canonical=without_trailing_zeros(8),
)
BOOLEAN_TEMPLATE = "CASE {c} WHEN 1 THEN 't' WHEN 0 THEN 'f' END"
BOOLEAN_RULE = Rule(
    "BooleanField",
    (Check("not a boolean (0 or 1)", "typeof({c}) = 'integer' AND {c} IN (0, 1)"),),
    copy=BOOLEAN_TEMPLATE,
    canonical=BOOLEAN_TEMPLATE,
    # A cast to text gives 'true' and 'false', not boolout's t and f.
    postgresql_text="CASE WHEN {c} THEN 't' WHEN NOT {c} THEN 'f' END",
    reads_text=False,
)
FLOAT_RULE = Rule(
    "FloatField",
    (Check("not a number", "typeof({c}) IN ('integer', 'real')"),),
    copy="printf('%!.17g', {c})",
    canonical="{c}",
    python_canonical=float_canonical,
    postgresql="encode(float8send({c}), 'hex')",
    reads_text=False,
)
DURATION_RULE = Rule(
    "DurationField",
    (Check("not a duration (integer microseconds)", "typeof({c}) = 'integer'"),),
    copy="{c} || ' microseconds'",
    postgresql="(extract(epoch from {c}) * 1000000)::numeric(40, 0)::text",
    reads_text=False,
)
UUID_RULE = Rule(
    "UUIDField",
    (
        Check(
            "not a UUID (32 hexadecimal digits)",
            "typeof({c}) = 'text' AND length({c}) = 32 AND lower({c}) NOT GLOB '*[^0-9a-f]*'",
        ),
    ),
    copy="{c}",
    canonical="lower({c})",
    postgresql="replace({c}::text, '-', '')",
)
BINARY_RULE = Rule(
    "BinaryField",
    (Check("not binary data", "typeof({c}) = 'blob'"),),
    copy="'\\x' || hex({c})",
    canonical="lower(hex({c}))",
    postgresql="encode({c}, 'hex')",
    reads_text=False,
)
JSON_RULE = Rule(
    "JSONField",
    (
        Check("invalid JSON", "typeof({c}) = 'text' AND json_valid({c})"),
        Check(
            "JSON with a \\u0000 character, which PostgreSQL jsonb cannot hold",
            bad="instr({c}, '\\u0000') > 0",
        ),
    ),
    copy="{c}",
    canonical="{c}",
    python_canonical=json_canonical,
    is_text=True,
)
IP_RULE = Rule(
    "GenericIPAddressField",
    (*text_checks(None), Check("not an IP address", "0", recheck=_recheck_ip)),
    copy="{c}",
    canonical="{c}",
    python_canonical=ip_canonical,
    postgresql="host({c})",
    is_text=True,
)
RULES = {
    rule.kind: rule
    for rule in (
        DATETIME_RULE,
        DATE_RULE,
        TIME_RULE,
        BOOLEAN_RULE,
        FLOAT_RULE,
        DURATION_RULE,
        UUID_RULE,
        BINARY_RULE,
        JSON_RULE,
        IP_RULE,
    )
}


def stored_field(field: models.Field) -> models.Field:
    """The field whose values a column holds: a relation's is its target's, followed to the
    end (a foreign key to a one-to-one parent link is a key of the parent)."""
    while field.is_relation and getattr(field, "target_field", None) is not None:
        field = field.target_field
    return field


def stored_kind(field: models.Field) -> str:
    kind = stored_field(field).get_internal_type()
    return AUTO_FIELD_KINDS.get(kind, kind)


def rule_for(field: models.Field) -> Rule:
    """The one place that decides how a field's column is imported: by the kind of field it
    stores (a subclass of a supported field is that field), else by its column's type in
    PostgreSQL (a custom field)."""
    kind = stored_kind(field)
    stored = stored_field(field)
    if kind in INTEGER_RANGES:
        return integer_rule(kind)
    if kind == "DecimalField":
        return decimal_rule(stored.max_digits, stored.decimal_places)
    if kind in STRING_KINDS:
        return string_rule(kind, None if kind == "TextField" else stored.max_length)
    if kind in RULES:
        return RULES[kind]
    postgresql_type, sqlite_type = column_types(stored)
    rule = rule_for_column_type(postgresql_type or "")
    if rule is None:
        raise UnsupportedField(field, kind, postgresql_type, sqlite_type)
    return rule


# A custom field's PostgreSQL column type, and the kind of field that stores it so.
COLUMN_TYPES = [
    (r"text|citext", "TextField"),
    (r"(?:varchar|character varying)\((\d+)\)", "CharField"),
    (r"smallint|smallserial", "SmallIntegerField"),
    (r"integer|int|serial", "IntegerField"),
    (r"bigint|bigserial", "BigIntegerField"),
    (r"boolean|bool", "BooleanField"),
    (r"timestamp with time zone|timestamptz", "DateTimeField"),
    (r"date", "DateField"),
    (r"time|time without time zone", "TimeField"),
    (r"numeric\((\d+), ?(\d+)\)", "DecimalField"),
    (r"double precision|float8", "FloatField"),
    (r"uuid", "UUIDField"),
    (r"jsonb", "JSONField"),
    (r"bytea", "BinaryField"),
    (r"inet", "GenericIPAddressField"),
    (r"interval", "DurationField"),
]


def rule_for_column_type(column_type: str) -> Rule | None:
    for pattern, kind in COLUMN_TYPES:
        match = re.fullmatch(pattern, column_type.strip().lower())
        if match is None:
            continue
        if kind == "CharField":
            return string_rule(kind, int(match.group(1)))
        if kind == "DecimalField":
            return decimal_rule(int(match.group(1)), int(match.group(2)))
        return rule_for_kind(kind)
    return None


def rule_for_kind(kind: str) -> Rule:
    if kind in INTEGER_RANGES:
        return integer_rule(kind)
    if kind in STRING_KINDS:
        return string_rule(kind, None)
    return RULES[kind]
