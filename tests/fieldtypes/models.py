"""Models with every field type import_sqlite converts; installed only when CALORIA_ENV=test."""

from django.db import models


class Tag(models.Model):
    code = models.CharField(primary_key=True, max_length=12)
    title = models.CharField(max_length=40, blank=True)

    def __str__(self):
        return self.code


class EveryField(models.Model):
    flag = models.BooleanField(default=False)
    maybe = models.BooleanField(null=True)
    small = models.SmallIntegerField(null=True)
    big = models.BigIntegerField(null=True)
    positive = models.PositiveIntegerField(null=True)
    amount = models.DecimalField(max_digits=12, decimal_places=4, null=True)
    ratio = models.FloatField(null=True)
    moment = models.DateTimeField(null=True)
    day = models.DateField(null=True)
    clock = models.TimeField(null=True)
    span = models.DurationField(null=True)
    token = models.UUIDField(null=True)
    data = models.JSONField(null=True)
    blob = models.BinaryField(null=True)
    address = models.GenericIPAddressField(null=True)
    label = models.CharField(max_length=20, blank=True)
    body = models.TextField(blank=True)
    # Nullable text, which Django advises against and real schemas have anyway.
    remark = models.CharField(max_length=20, null=True, blank=True)  # noqa: DJ001
    tags = models.ManyToManyField(Tag, blank=True)

    def __str__(self):
        return f"every field #{self.pk}"
