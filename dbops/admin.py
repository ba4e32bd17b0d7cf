"""Read-only history of database operations: staff look, nobody edits."""

from django.contrib import admin
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.timesince import timesince

from dbops import runs
from dbops.models import BackupRecord, ConsistencyRun, ImportRun, RestoreRun


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class RunAdmin(ReadOnlyAdmin):
    """A history whose `running` records are checked before staff read them: one whose
    process is gone is shown as abandoned (see dbops.runs)."""

    def changelist_view(self, request, extra_context=None):
        runs.mark_abandoned(self.model)
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        runs.mark_abandoned(self.model)
        return super().change_view(request, object_id, form_url, extra_context)


@admin.register(ImportRun)
class ImportRunAdmin(RunAdmin):
    list_display = ("started_at", "status", "source_path", "total_rows", "duration", "database")
    list_filter = ("status", "database")
    search_fields = ("source_path", "source_sha256", "error")
    date_hierarchy = "started_at"
    ordering = ("-started_at", "-id")

    @admin.display(description="duration", ordering="duration_seconds")
    def duration(self, run):
        return "" if run.duration_seconds is None else f"{run.duration_seconds:.1f} s"


@admin.register(BackupRecord)
class BackupRecordAdmin(RunAdmin):
    list_display = (
        "started_at",
        "status",
        "filename",
        "size_display",
        "age",
        "verification",
        "verified_by",
        "verified_at",
        "remote_copy",
        "encrypted",
        "dumped_from",
        "deleted_at",
        "pinned",
    )
    list_filter = (
        "status",
        "verification",
        "pinned",
        "remote_copy",
        "encrypted",
        ("deleted_at", admin.EmptyFieldListFilter),
    )
    readonly_fields = ("verified_by",)
    actions = ("keep", "stop_keeping")
    search_fields = ("filename", "sha256", "error")
    date_hierarchy = "started_at"
    ordering = ("-started_at", "-id")

    @admin.display(description="size", ordering="size")
    def size_display(self, record):
        if record.size is None:
            return ""
        size = float(record.size)
        for unit in ("B", "KiB", "MiB", "GiB"):
            if size < 1024 or unit == "GiB":
                return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
            size /= 1024
        return ""

    @admin.display(description="compared")
    def verified_by(self, record):
        """What the verification compared, so staff can tell a backup proven value by value
        from one (recorded before checksums were) whose row counts alone matched: it compares
        the checksums the record holds (dbops.backups.compared)."""
        if record.verification == BackupRecord.Verification.NOT_VERIFIED:
            return ""
        return "counts and checksums" if record.table_checksums else "counts only"

    @admin.display(description="age", ordering="-started_at")
    def age(self, record):
        return timesince(record.started_at, timezone.now())

    # Pinning is the one change staff make here: with the right to change backup records (a
    # superuser has it), never by editing the record. Who did it, and when, is in the admin's
    # history of the record (LogEntry).
    def has_pin_permission(self, request):
        return request.user.has_perm("dbops.change_backuprecord")

    @admin.action(description="Keep: never delete by retention", permissions=["pin"])
    def keep(self, request, queryset):
        self._pin(request, queryset, True, "Kept: retention never deletes it")

    @admin.action(description="Stop keeping: retention decides again", permissions=["pin"])
    def stop_keeping(self, request, queryset):
        self._pin(request, queryset, False, "No longer kept: retention decides again")

    def _pin(self, request, queryset, pinned: bool, message: str) -> None:
        changed = list(queryset.exclude(pinned=pinned))
        for record in changed:
            record.pinned = pinned
            record.save(update_fields=["pinned"])
            self.log_change(request, record, message)
        self.message_user(request, f"{message}: {len(changed)} backup(s).")


@admin.register(RestoreRun)
class RestoreRunAdmin(RunAdmin):
    """The restore history: what was restored, into which database, each check's outcome,
    and where a swap put the live database (what `--rollback` puts back)."""

    list_display = (
        "started_at",
        "action",
        "status",
        "backup",
        "restored_database",
        "previous_database",
        "duration",
    )
    list_filter = ("status", "action", "database")
    list_select_related = ("backup",)
    search_fields = ("restored_database", "previous_database", "backup__filename", "error")
    date_hierarchy = "started_at"
    ordering = ("-started_at", "-id")
    fields = (
        "action",
        "status",
        "started_at",
        "finished_at",
        "duration",
        "host",
        "pid",
        "database",
        "backup",
        "from_remote",
        "restored_database",
        "previous_database",
        "error",
        "steps_table",
    )
    readonly_fields = fields

    @admin.display(description="duration", ordering="duration_seconds")
    def duration(self, run):
        return "" if run.duration_seconds is None else f"{run.duration_seconds:.1f} s"

    @admin.display(description="steps")
    def steps_table(self, run):
        if not run.steps:
            return "none recorded"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} s</td></tr>",
            (
                (step.get("name"), step.get("outcome"), step.get("detail"), step.get("seconds"))
                for step in run.steps
            ),
        )
        return format_html(
            "<table><thead><tr><th>Step</th><th>Outcome</th><th>Detail</th><th>Time</th></tr>"
            "</thead><tbody>{}</tbody></table>",
            rows,
        )


@admin.register(ConsistencyRun)
class ConsistencyRunAdmin(RunAdmin):
    list_display = ("started_at", "status", "database", "findings_total", "findings", "fixed")
    list_filter = ("status", "database")
    date_hierarchy = "started_at"
    ordering = ("-started_at", "-id")
