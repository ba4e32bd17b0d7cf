"""Which tables an import copies, with which columns, in what way.

Every concrete, managed model installed in the project is imported (auto-created many-to-many
tables included), except dbops' own history (an import run describes the target, not the
source) and what `--exclude` names. Content types and permissions are created by `migrate` in
the target with ids of its own; they are replaced by the source's rows so that every foreign
key to them (admin log, user permissions) keeps pointing at the same thing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from django.apps import apps
from django.core.management import CommandError
from django.core.management.utils import parse_apps_and_model_labels
from django.db import models

from dbops.sqlite_import.django_internals import check_sql
from dbops.sqlite_import.fields import NUL_IN_TEXT, NULL, Check, Rule, UnsupportedField, rule_for

ALWAYS_EXCLUDED_APPS = {"dbops"}
REPLACED_TABLES = {"django_content_type", "auth_permission"}


class PlanError(Exception):
    """What to import cannot be decided; `problems` lists every reason."""

    def __init__(self, summary: str, problems: list[str] | None = None):
        super().__init__(summary)
        self.summary, self.problems = summary, problems or []


@dataclass(frozen=True)
class TableCheck:
    """A CHECK constraint of a model, in SQLite's SQL as `migrate` wrote it into a source's
    schema. PostgreSQL enforces the same constraint, so preflight finds the rows breaking it
    (in the same scan as the value checks: SQLite's own integrity check of CHECK constraints
    cost twice the rest of that check, and named no row)."""

    name: str
    columns: tuple[str, ...]  # the columns it reads, shown with a row breaking it
    condition: str

    def bad_sql(self) -> str:
        # A CHECK constraint refuses a row only when its condition is false, not NULL.
        return f"NOT coalesce(({self.condition}), 1)"


@dataclass
class TablePlan:
    model: type[models.Model]
    table: str
    label: str
    columns: list[Column]
    pk: str
    has_sequence: bool
    replaced: bool = False
    foreign_keys: list[tuple[str, str, str]] = field(default_factory=list)
    # The SQLite table read; differs from `table` only for a mapped import.
    source_table: str = ""
    checks: list[TableCheck] = field(default_factory=list)

    def __post_init__(self):
        self.source_table = self.source_table or self.table

    @property
    def app_label(self) -> str:
        return self.model._meta.app_label

    def column(self, name: str) -> Column:
        return next(column for column in self.columns if column.name == name)

    @property
    def where(self) -> str:
        """How problems name this table: the source table, and the target when mapped."""
        if self.source_table == self.table:
            return self.table
        return f"{self.source_table} (into {self.table})"

    @property
    def source_pk(self) -> str:
        """SQL for the primary key in the source (a column, or a mapped expression)."""
        return self.column(self.pk).quoted

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]


@dataclass(frozen=True)
class Column:
    """One column to import: its field and its rule (a mapped import may override both the
    SQL that reads it and its canonical text in Python)."""

    name: str
    field: models.Field
    rule: Rule
    nullable: bool
    # For a mapped import: the SQL giving this column's value from the source row.
    source_sql: str = ""
    # For a mapped import: a Python canonical form that replaces the rule's.
    python_normalizer: Callable[[object], str] | None = None
    # For a mapped import: the conversion of the source value (replaces the rule's copy).
    copy_template: str = ""
    checks: tuple[Check, ...] | None = None  # None: the rule's

    def __post_init__(self):
        if self.checks is None:
            object.__setattr__(self, "checks", self.rule.checks)
        if not self.copy_template:
            object.__setattr__(self, "copy_template", self.rule.copy)

    @property
    def kind(self) -> str:
        return self.rule.kind

    @property
    def quoted(self) -> str:
        if self.source_sql:
            return f"({self.source_sql})"
        return '"' + self.name.replace('"', '""') + '"'

    def problem_conditions(self) -> list[tuple[Check, str]]:
        """Every check of this column with the SQL that is true for the rows it rejects."""
        c = self.quoted
        found = [(check, check.bad_sql(c)) for check in self.checks]
        if self.rule.reads_text:
            # Strings arrive as text, and dates, times, UUIDs and JSON too. length(), substr()
            # and GLOB stop at a NUL, so a NUL and junk after a valid start would pass the
            # checks above; PostgreSQL cannot store it.
            found.append((NUL_IN_TEXT, f"typeof({c}) = 'text' AND {NUL_IN_TEXT.bad.format(c=c)}"))
        if not self.nullable:
            found.insert(0, (Check("NULL in a NOT NULL column"), f"{c} IS NULL"))
        return found

    @property
    def canonical_in_python(self) -> bool:
        return self.python_normalizer is not None or self.rule.python_canonical is not None

    def python_canonical(self) -> Callable[[object], str]:
        return self.python_normalizer or self.rule.python_canonical

    def copy_sql(self) -> str:
        """SQL of the value as COPY's text format reads it, before escaping; NULL for NULL."""
        c = self.quoted
        if not self.nullable:
            return self.copy_template.format(c=c)
        return f"CASE WHEN {c} IS NULL THEN NULL ELSE {self.copy_template.format(c=c)} END"

    @property
    def text_could_read_as_null(self) -> bool:
        """A nullable text column whose canonical text is its value: the text '\\N' would
        read as NULL, so the canonical text marks every value with a leading '=' (on both
        sides, see verify.py), and a copy that turns '\\N' into NULL cannot pass."""
        return self.nullable and self.rule.canonical_is_the_value and not self.canonical_in_python

    def canonical_sql(self) -> str:
        if self.text_could_read_as_null:
            return self._null_safe(f"'=' || {self.rule.canonical}")
        return self._null_safe(self.rule.canonical)

    def _null_safe(self, template: str) -> str:
        # Not coalesce(): several SQLite functions turn NULL into a value (hex(NULL) is '',
        # printf('%g', NULL) is '0.0'). A NOT NULL column needs no test: preflight has made
        # sure it holds no NULL.
        c = self.quoted
        if not self.nullable:
            return template.format(c=c)
        return f"CASE WHEN {c} IS NULL THEN '{NULL}' ELSE {template.format(c=c)} END"

    def postgresql_value(self, quoted_name: str) -> str:
        """PostgreSQL SQL of this column's canonical value (COPY TO prints its text)."""
        return self.rule.postgresql.format(c=quoted_name)

    def postgresql_text(self, quoted_name: str) -> str:
        """PostgreSQL SQL of this column's canonical text, as text."""
        return self.rule.postgresql_text.format(c=self.postgresql_value(quoted_name))


def column_for(model_field: models.Field) -> Column:
    return Column(model_field.column, model_field, rule_for(model_field), model_field.null)


def table_models() -> list[type[models.Model]]:
    """Every model with a table of its own: managed, concrete, not swapped out; auto-created
    many-to-many tables included."""
    return [
        model
        for model in apps.get_models(include_auto_created=True)
        if model._meta.managed and not model._meta.proxy and not model._meta.swapped
    ]


def importable_models() -> list[type[models.Model]]:
    return [model for model in table_models() if model._meta.app_label not in ALWAYS_EXCLUDED_APPS]


def parse_excludes(excludes: list[str]) -> tuple[set[str], set[str]]:
    """Split `--exclude` values into app labels and model labels (lower case), as Django's
    dumpdata reads its own, checking every one before saying what is wrong."""
    app_labels, model_labels, problems = set(), set(), []
    for value in excludes:
        try:
            models_named, apps_named = parse_apps_and_model_labels([value])
        except CommandError as exc:
            problems.append(
                f"--exclude {value}: {exc} (expected APP_LABEL or APP_LABEL.Model, e.g. "
                f"sessions or sessions.Session)"
            )
            continue
        app_labels |= {app_config.label for app_config in apps_named}
        model_labels |= {model._meta.label_lower for model in models_named}
    if problems:
        raise PlanError("; ".join(problems))
    return app_labels, model_labels


def is_excluded(model, app_labels: set[str], model_labels: set[str]) -> bool:
    meta = model._meta
    if meta.app_label in app_labels or meta.label_lower in model_labels:
        return True
    if meta.auto_created:
        # A many-to-many table goes with the model that declares the field.
        owner = meta.auto_created
        return owner._meta.app_label in app_labels or owner._meta.label_lower in model_labels
    return False


def build_plan(excludes: list[str]) -> tuple[list[TablePlan], list[str]]:
    """The tables to import, and the tables left out (as labels) for the report."""
    app_labels, model_labels = parse_excludes(excludes)
    plans, skipped, unsupported = [], [], []
    for model in importable_models():
        if is_excluded(model, app_labels, model_labels):
            skipped.append(model._meta.db_table)
            continue
        try:
            plans.append(table_plan(model))
        except UnsupportedField as exc:
            unsupported.append(unsupported_problem(model, exc))
    if unsupported:
        raise PlanError(
            f"{len(unsupported)} table(s) cannot be imported; nothing was read", unsupported
        )
    return plans, skipped


def unsupported_problem(model: type[models.Model], exc: UnsupportedField) -> str:
    """The field, why, and the --exclude that leaves it out (a many-to-many table goes with
    the model declaring the field)."""
    owner = model._meta.auto_created or model
    problem = f"{exc}; leave it out with --exclude {owner._meta.label}"
    if "differs by backend" in str(exc):
        problem += (
            ", then fill it in PostgreSQL as the project does (a search index: with its "
            "rebuild command)"
        )
    return problem


def table_plan(model: type[models.Model]) -> TablePlan:
    meta = model._meta
    columns = [column_for(f) for f in meta.local_concrete_fields]
    pk = meta.pk
    foreign_keys = [
        (f.column, f.related_model._meta.db_table, f.target_field.column)
        for f in meta.local_concrete_fields
        if f.is_relation and f.related_model is not None
    ]
    return TablePlan(
        model=model,
        table=meta.db_table,
        label=meta.label,
        columns=columns,
        pk=pk.column,
        has_sequence=isinstance(pk, models.AutoField),
        replaced=meta.db_table in REPLACED_TABLES,
        foreign_keys=foreign_keys,
        checks=check_constraints(model),
    )


def check_constraints(model: type[models.Model]) -> list[TableCheck]:
    """The model's CHECK constraints (Meta.constraints) in SQLite's SQL.

    A field's own CHECK (a positive integer's) is left out: its value check enforces the same
    range. The SQL comes from Django's SQLite backend, as `migrate` wrote it, without
    connecting to any database.
    """
    meta = model._meta
    checks = []
    for constraint in meta.constraints:
        if not isinstance(constraint, models.CheckConstraint):
            continue
        # A Q condition names its fields (or their attnames); for a boolean expression, which
        # does not, a row breaking it is shown whole.
        names = getattr(constraint.condition, "referenced_base_fields", set())
        fields = {meta.get_field(name) for name in names}
        columns = tuple(f.column for f in meta.local_concrete_fields if f in fields or not names)
        condition = check_sql(constraint, model)
        checks.append(TableCheck(constraint.name, columns, condition))
    return checks


def unique_column_sets(model: type[models.Model]) -> list[tuple[str, ...]]:
    """Column sets that must be unique in the target (beyond the primary key)."""
    meta = model._meta
    sets = [(f.column,) for f in meta.local_concrete_fields if f.unique and not f.primary_key]
    for together in meta.unique_together:
        sets.append(tuple(meta.get_field(name).column for name in together))
    for constraint in meta.total_unique_constraints:
        sets.append(tuple(meta.get_field(name).column for name in constraint.fields))
    return list(dict.fromkeys(sets))
