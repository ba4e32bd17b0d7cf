"""The history of database operations, kept in the database they were done to."""

from django.db import models

from dbops import locks


class Run(models.Model):
    """What every recorded run has: when, where it ran, and how it ended (see dbops.runs)."""

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        ABANDONED = "abandoned"

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    host = models.CharField(max_length=255, blank=True, help_text="Where the process ran.")
    pid = models.IntegerField(null=True, blank=True, help_text="Its process id there.")
    error = models.TextField(blank=True)

    class Meta:
        abstract = True


class ImportRun(Run):
    """One run of `import_sqlite`: what was read, what happened, and the proof."""

    RUN_LOCK = locks.IMPORT_RUN

    database = models.CharField("target database alias", max_length=100, default="default")
    source_path = models.TextField()
    source_sha256 = models.CharField("source snapshot sha256", max_length=64, blank=True)
    snapshot_path = models.TextField(blank=True)
    mapping = models.CharField(max_length=200, blank=True)
    options = models.JSONField(default=dict, blank=True)
    tables = models.JSONField(
        default=list, blank=True, help_text="Per table: rows on both sides, checksums, seconds."
    )
    total_rows = models.BigIntegerField(default=0)
    duration_seconds = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["-started_at"], name="importrun_started_at")]

    def __str__(self):
        return f"import of {self.source_path} at {self.started_at:%Y-%m-%d %H:%M:%S} UTC"


class BackupRecord(Run):
    """One run of `dbbackup`: the file it wrote, what it held, and whether it restores."""

    RUN_LOCK = locks.BACKUP_RUN

    class Verification(models.TextChoices):
        NOT_VERIFIED = "", "not verified"
        PASSED = "passed"
        FAILED = "failed"

    duration_seconds = models.FloatField(null=True, blank=True)
    database = models.CharField(max_length=100, default="default")
    engine = models.CharField(max_length=100, blank=True)
    filename = models.CharField(max_length=255, blank=True)
    size = models.BigIntegerField(null=True, blank=True, help_text="Bytes.")
    sha256 = models.CharField(max_length=64, blank=True)
    migrations = models.JSONField(
        default=dict, blank=True, help_text="Newest applied migration of each app."
    )
    table_counts = models.JSONField(default=dict, blank=True, help_text="Rows per table.")
    deleted_at = models.DateTimeField(
        null=True, blank=True, help_text="When retention removed the file."
    )
    verification = models.CharField(
        max_length=10, choices=Verification.choices, default="", blank=True
    )
    verified_at = models.DateTimeField(null=True, blank=True)
    verification_detail = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["status", "-started_at"], name="backup_status_started")]

    def __str__(self):
        return self.filename or f"backup started {self.started_at:%Y-%m-%d %H:%M:%S} UTC"
