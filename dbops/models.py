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

    class RemoteCopy(models.TextChoices):
        NOT_CONFIGURED = "", "no remote storage"
        COPIED = "copied"
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
    table_checksums = models.JSONField(
        default=dict,
        blank=True,
        help_text="Per table: the checksum of its rows, taken in the snapshot pg_dump dumped.",
    )
    encrypted = models.BooleanField(default=False)
    encryption_key = models.CharField(
        max_length=200, blank=True, help_text="The public key it was encrypted to (not secret)."
    )
    remote_copy = models.CharField(
        "off-site copy", max_length=10, choices=RemoteCopy.choices, default="", blank=True
    )
    remote_name = models.CharField("name in the remote storage", max_length=255, blank=True)
    remote_copied_at = models.DateTimeField(null=True, blank=True)
    remote_detail = models.TextField(blank=True)
    remote_deleted_at = models.DateTimeField(
        null=True, blank=True, help_text="When retention removed the off-site copy."
    )
    pinned = models.BooleanField(
        "keep", default=False, help_text="A kept backup is never deleted by retention."
    )
    dumped_from = models.CharField(
        "dumped from standby",
        max_length=100,
        blank=True,
        help_text="The standby's alias when pg_dump read a standby (dbbackup --from-replica); "
        "empty: the database itself.",
    )

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [
            models.Index(fields=["status", "-started_at"], name="backup_status_started"),
            # /metrics reads the newest verified and the newest off-site copy with LIMIT 1.
            models.Index(fields=["verification", "-started_at"], name="backup_verified_started"),
            models.Index(fields=["remote_copy", "-started_at"], name="backup_remote_started"),
        ]

    def __str__(self):
        return self.filename or f"backup started {self.started_at:%Y-%m-%d %H:%M:%S} UTC"


class RestoreRun(Run):
    """One run of `restore_backup`: the backup, the database it was restored into, the checks,
    and whether it was swapped into service (or rolled back)."""

    RUN_LOCK = locks.RESTORE_RUN

    class Action(models.TextChoices):
        RESTORE = "restore", "restore and check"
        SWAP = "swap", "restore, check and swap in"
        ROLLBACK = "rollback", "roll back a swap"

    action = models.CharField(max_length=10, choices=Action.choices, default=Action.RESTORE)
    backup = models.ForeignKey(
        BackupRecord, null=True, blank=True, on_delete=models.SET_NULL, related_name="restores"
    )
    from_remote = models.BooleanField("from the off-site copy", default=False)
    database = models.CharField("live database alias", max_length=100, default="default")
    restored_database = models.CharField(max_length=63, blank=True)
    previous_database = models.CharField(
        max_length=63, blank=True, help_text="Where the live database was renamed aside."
    )
    steps = models.JSONField(
        default=list, blank=True, help_text="Each step: name, outcome, detail, seconds."
    )
    duration_seconds = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self):
        return f"{self.get_action_display()} at {self.started_at:%Y-%m-%d %H:%M:%S} UTC"


class ConsistencyRun(Run):
    """One run of `check_consistency`: how many findings of each kind it made (None when the
    checks could not run at all; `error` says why). Succeeded means no findings."""

    RUN_LOCK = locks.CONSISTENCY_RUN

    database = models.CharField(max_length=100, default="default")
    against = models.TextField("--against", blank=True)
    findings = models.JSONField(
        null=True, blank=True, help_text="Findings per kind of check (none when none ran)."
    )
    findings_total = models.IntegerField(null=True, blank=True)
    fixed = models.IntegerField(default=0, help_text="Sequences --fix repaired.")
    duration_seconds = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["-started_at"], name="consistencyrun_started_at")]

    def __str__(self):
        return f"consistency check at {self.started_at:%Y-%m-%d %H:%M:%S} UTC"
