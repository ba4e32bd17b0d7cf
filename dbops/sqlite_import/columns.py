"""How each Django field's SQLite value is checked and turned into a PostgreSQL COPY value.

SQLite enforces almost nothing (GUIDE section 4), so every column gets a list of checks, and
the checks and the conversion both run *inside SQLite*, as SQL: a million rows are checked in
one aggregate scan and turned into COPY lines without a Python call per value. That is what
makes the import run at COPY speed. The few values SQL cannot judge (invalid UTF-8, decimals
kept as text, IP addresses) are re-checked in Python, only for the rows SQL points at.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Context, Decimal, localcontext

from django.db import models

NULL = "\\N"

INTEGER_RANGES = {
    "SmallIntegerField": (-(2**15), 2**15 - 1),
    "SmallAutoField": (-(2**15), 2**15 - 1),
    "IntegerField": (-(2**31), 2**31 - 1),
    "AutoField": (-(2**31), 2**31 - 1),
    "BigIntegerField": (-(2**63), 2**63 - 1),
    "BigAutoField": (-(2**63), 2**63 - 1),
    "PositiveSmallIntegerField": (0, 2**15 - 1),
    "PositiveIntegerField": (0, 2**31 - 1),
    "PositiveBigIntegerField": (0, 2**63 - 1),
}
SQLITE_INTEGER_RANGE = (-(2**63), 2**63 - 1)
TEXT_KINDS = {
    "CharField",
    "TextField",
    "EmailField",
    "SlugField",
    "URLField",
    "FilePathField",
    "FileField",
    "ImageField",
    "GenericIPAddressField",
    "JSONField",
}

# Kinds whose checks refuse every text value, or hand each one to a Python recheck that reads
# all of its bytes: a NUL in their text needs no check of its own (it was 6% of preflight).
TEXT_REFUSED_KINDS = {
    *INTEGER_RANGES,
    "BooleanField",
    "FloatField",
    "DurationField",
    "DecimalField",
    "BinaryField",
}

# Kinds whose canonical (checksum) text is the value itself: any text, '\N' included.
SQL_CANONICAL_TEXT_KINDS = TEXT_KINDS - {"JSONField", "GenericIPAddressField"}

# Kinds whose canonical (checksum) text is computed in Python from the raw SQLite value,
# because SQLite cannot print them the way PostgreSQL does (see checksums.py).
PYTHON_CANONICAL_KINDS = {"FloatField", "JSONField", "GenericIPAddressField"}


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
# The '+0 days' modifier makes SQLite normalise, so 2025-02-30 no longer equals itself.
DATE_OK = (
    "typeof({c}) = 'text' AND length({c}) = 10 AND date({c}, '+0 days') IS {c} "
    "AND {c} NOT GLOB '0000*'"
)
TIME_OK = (
    "typeof({c}) = 'text' AND {c} GLOB '[0-9][0-9]:[0-9][0-9]:[0-9][0-9]*' "
    f"AND time(substr({{c}}, 1, 8), '+0 seconds') IS substr({{c}}, 1, 8) AND {fraction_ok(8)}"
)
# Escape for COPY's text format, but only scan-and-replace the rare values that need it.
COPY_ESCAPED = (
    "CASE WHEN instr({c}, '\\') + instr({c}, char(9)) + instr({c}, char(10)) "
    "+ instr({c}, char(13)) = 0 THEN {c} ELSE "
    "replace(replace(replace(replace({c}, '\\', '\\\\'), char(9), '\\t'), char(10), '\\n'), "
    "char(13), '\\r') END"
)


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


@dataclass(frozen=True)
class Column:
    """One column to import: its field, its checks, and its SQL for COPY and for checksums."""

    name: str
    field: models.Field
    kind: str
    nullable: bool
    checks: tuple[Check, ...] = field(default_factory=tuple)
    copy_template: str = "CAST({c} AS TEXT)"
    canonical_template: str = "CAST({c} AS TEXT)"
    # For a mapped import: the SQL giving this column's value from the source row.
    source_sql: str = ""
    # For a mapped import: a Python canonical form that replaces the SQL one.
    python_normalizer: Callable[[object], str] | None = None

    @property
    def quoted(self) -> str:
        if self.source_sql:
            return f"({self.source_sql})"
        return '"' + self.name.replace('"', '""') + '"'

    def problem_conditions(self) -> list[tuple[Check, str]]:
        """Every check of this column with the SQL that is true for the rows it rejects."""
        c = self.quoted
        found = [(check, check.bad_sql(c)) for check in self.checks]
        if self.kind not in TEXT_REFUSED_KINDS:
            # Strings arrive as text, and dates, times, UUIDs and JSON too. length(), substr()
            # and GLOB stop at a NUL, so a NUL and junk after a valid start would pass the
            # checks above; PostgreSQL cannot store it.
            found.append((NUL_IN_TEXT, f"typeof({c}) = 'text' AND {NUL_IN_TEXT.bad.format(c=c)}"))
        if not self.nullable:
            found.insert(0, (Check("NULL in a NOT NULL column"), f"{c} IS NULL"))
        return found

    @property
    def canonical_in_python(self) -> bool:
        return self.python_normalizer is not None or self.kind in PYTHON_CANONICAL_KINDS

    def python_canonical(self) -> Callable[[object], str]:
        from dbops.sqlite_import.checksums import python_normalizer

        return self.python_normalizer or python_normalizer(self.kind)

    def copy_sql(self) -> str:
        """SQL of the value as COPY's text format reads it, before escaping (see
        importer.copy_line_sql); NULL for NULL."""
        c = self.quoted
        if not self.nullable:
            return self.copy_template.format(c=c)
        return f"CASE WHEN {c} IS NULL THEN NULL ELSE {self.copy_template.format(c=c)} END"

    @property
    def text_could_read_as_null(self) -> bool:
        """A nullable text column whose canonical text is its value: the text '\\N' would
        read as NULL, so the canonical text marks every value with a leading '=' (on both
        sides, see checksums.py), and a copy that turns '\\N' into NULL cannot pass."""
        return (
            self.nullable and self.kind in SQL_CANONICAL_TEXT_KINDS and not self.canonical_in_python
        )

    def canonical_sql(self) -> str:
        if self.text_could_read_as_null:
            return self._null_safe(f"'=' || {self.canonical_template}")
        return self._null_safe(self.canonical_template)

    def _null_safe(self, template: str) -> str:
        # Not coalesce(): several SQLite functions turn NULL into a value (hex(NULL) is '',
        # printf('%g', NULL) is '0.0'). A NOT NULL column needs no test: preflight has made
        # sure it holds no NULL.
        c = self.quoted
        if not self.nullable:
            return template.format(c=c)
        return f"CASE WHEN {c} IS NULL THEN '{NULL}' ELSE {template.format(c=c)} END"


def value_kind(field: models.Field) -> str:
    """The Django internal type that decides conversion (a foreign key uses its target's)."""
    kind = field.get_internal_type()
    if kind in ("ForeignKey", "OneToOneField"):
        kind = field.target_field.get_internal_type()
        kind = {
            "AutoField": "IntegerField",
            "BigAutoField": "BigIntegerField",
            "SmallAutoField": "SmallIntegerField",
        }.get(kind, kind)
    return kind


class UnsupportedField(Exception):
    pass


# A number as PostgreSQL's numeric input reads it (ASCII digits, C-locale spaces around it).
# Python's Decimal alone is laxer: it takes '1_000', other scripts' digits and more spaces.
NUMERIC_TEXT = re.compile(
    r"[ \t\n\r\v\f]*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?[ \t\n\r\v\f]*", re.ASCII
)


def _recheck_decimal(max_digits: int, decimal_places: int):
    step = Decimal(1).scaleb(-decimal_places)

    def recheck(value) -> str | None:
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        if not NUMERIC_TEXT.fullmatch(text):
            return "text in a decimal column"
        number = Decimal(text.strip(" \t\n\r\v\f"))
        # The size first: quantize() fails on a number too long for the context.
        if number != 0 and number.adjusted() + 1 > max_digits - decimal_places:
            return f"more than {max_digits - decimal_places} digits before the decimal point"
        with localcontext(Context(prec=max(max_digits, 28))):
            if number.quantize(step) != number:
                return f"more than {decimal_places} decimal places"
        return None

    return recheck


def _recheck_ip(value) -> str | None:
    try:
        ipaddress.ip_address(value.decode("utf-8") if isinstance(value, bytes) else value)
    except (ValueError, UnicodeDecodeError):
        return "not an IP address"
    return None


NUL_IN_TEXT = Check(
    "contains a NUL character, which PostgreSQL text cannot hold",
    bad="instr(CAST({c} AS BLOB), x'00') > 0",
)


def text_checks(max_length: int | None) -> list[Check]:
    checks = [Check("not text", "typeof({c}) = 'text'")]
    if max_length is not None:
        checks.append(
            Check(f"longer than max_length {max_length}", bad=f"length({{c}}) > {max_length}")
        )
    return checks


def column_for(field: models.Field) -> Column:
    kind = value_kind(field)
    name, nullable = field.column, field.null
    if kind in INTEGER_RANGES:
        low, high = INTEGER_RANGES[kind]
        checks = (Check("not an integer", "typeof({c}) = 'integer'"),)
        if (low, high) != SQLITE_INTEGER_RANGE:  # a SQLite integer always fits 64 bits
            checks += (
                Check(
                    f"out of range {low}..{high}",
                    f"typeof({{c}}) != 'integer' OR {{c}} BETWEEN {low} AND {high}",
                ),
            )
        return Column(name, field, kind, nullable, checks)
    if kind == "BooleanField":
        checks = (Check("not a boolean (0 or 1)", "typeof({c}) = 'integer' AND {c} IN (0, 1)"),)
        template = "CASE {c} WHEN 1 THEN 't' WHEN 0 THEN 'f' END"
        return Column(name, field, kind, nullable, checks, template, template)
    if kind == "DateTimeField":
        checks = (Check("not a datetime in Django's SQLite format", DATETIME_OK),)
        canonical = without_trailing_zeros(19)
        return Column(name, field, kind, nullable, checks, "{c} || '+00'", canonical)
    if kind == "DateField":
        return Column(name, field, kind, nullable, (Check("not a date", DATE_OK),), "{c}", "{c}")
    if kind == "TimeField":
        canonical = without_trailing_zeros(8)
        checks = (Check("not a time", TIME_OK),)
        return Column(name, field, kind, nullable, checks, "{c}", canonical)
    if kind == "DecimalField":
        places, digits = field.decimal_places, field.max_digits
        checks = (
            Check(
                "text in a decimal column",
                "typeof({c}) IN ('integer', 'real')",
                recheck=_recheck_decimal(digits, places),
            ),
            Check(
                f"more than {places} decimal places",
                bad=f"typeof({{c}}) = 'real' "
                f"AND CAST(printf('%.{places}f', {{c}}) AS REAL) != {{c}}",
            ),
            Check(
                f"more than {digits - places} digits before the decimal point",
                bad=f"typeof({{c}}) IN ('integer', 'real') AND abs({{c}}) >= 1e{digits - places}",
            ),
        )
        # SQLite prints a REAL with 15 significant digits ('12.5'), which PostgreSQL scales
        # to the column's places; preflight has made sure no value needs rounding.
        copy = "CAST({c} AS TEXT)"
        # The checksum prints at the column's scale instead ('12.50', as PostgreSQL does):
        # a different path from the COPY text, so a wrong conversion cannot hide.
        canonical = (
            f"CASE typeof({{c}}) WHEN 'text' THEN {{c}} ELSE printf('%.{places}f', {{c}}) END"
        )
        return Column(name, field, kind, nullable, checks, copy, canonical)
    if kind == "FloatField":
        checks = (Check("not a number", "typeof({c}) IN ('integer', 'real')"),)
        return Column(name, field, kind, nullable, checks, "printf('%!.17g', {c})", "{c}")
    if kind == "DurationField":
        checks = (Check("not a duration (integer microseconds)", "typeof({c}) = 'integer'"),)
        return Column(name, field, kind, nullable, checks, "{c} || ' microseconds'")
    if kind == "UUIDField":
        checks = (
            Check(
                "not a UUID (32 hexadecimal digits)",
                "typeof({c}) = 'text' AND length({c}) = 32 AND lower({c}) NOT GLOB '*[^0-9a-f]*'",
            ),
        )
        return Column(name, field, kind, nullable, checks, "{c}", "lower({c})")
    if kind == "BinaryField":
        checks = (Check("not binary data", "typeof({c}) = 'blob'"),)
        return Column(name, field, kind, nullable, checks, "'\\x' || hex({c})", "lower(hex({c}))")
    if kind == "JSONField":
        checks = (
            Check("invalid JSON", "typeof({c}) = 'text' AND json_valid({c})"),
            Check(
                "JSON with a \\u0000 character, which PostgreSQL jsonb cannot hold",
                bad="instr({c}, '\\u0000') > 0",
            ),
        )
        return Column(name, field, kind, nullable, checks, "{c}", "{c}")
    if kind == "GenericIPAddressField":
        checks = (*text_checks(None), Check("not an IP address", "0", recheck=_recheck_ip))
        return Column(name, field, kind, nullable, checks, "{c}", "{c}")
    if kind in TEXT_KINDS:
        max_length = None if kind == "TextField" else getattr(field, "max_length", None)
        return Column(name, field, kind, nullable, tuple(text_checks(max_length)), "{c}", "{c}")
    raise UnsupportedField(f"{field.model._meta.label}.{field.name}: {kind} is not supported")


def shorten(value: object, limit: int = 40) -> str:
    """A value as it may appear in a report: short, and undecodable bytes shown safely."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
