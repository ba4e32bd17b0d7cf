"""Read-only history of database operations: staff look, nobody edits."""

from django.contrib import admin

from dbops.models import ImportRun


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ImportRun)
class ImportRunAdmin(ReadOnlyAdmin):
    list_display = ("started_at", "status", "source_path", "total_rows", "duration", "database")
    list_filter = ("status", "database")
    search_fields = ("source_path", "source_sha256", "error")
    date_hierarchy = "started_at"
    ordering = ("-started_at", "-id")

    @admin.display(description="duration", ordering="duration_seconds")
    def duration(self, run):
        return "" if run.duration_seconds is None else f"{run.duration_seconds:.1f} s"
