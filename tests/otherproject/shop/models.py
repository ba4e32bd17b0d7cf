"""A shop built from popular third-party apps, for dbops to import without knowing it.

What a real project brings that Caloria's schema does not: a ForeignKey subclass
(modelcluster's ParentalKey) and a cluster of child objects, taggit's tags through a model of
their own, a tree (treebeard), multi-table inheritance and a foreign key to the child, a
generic relation, a subclass of a supported field and a custom field of its own type, a UUID
primary key, a many-to-many through a model, and data migrations that create rows.
"""

import uuid

from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models
from modelcluster.contrib.taggit import ClusterTaggableManager
from modelcluster.fields import ParentalKey
from modelcluster.models import ClusterableModel
from taggit.models import TaggedItemBase
from treebeard.mp_tree import MP_Node


class Money(models.DecimalField):
    """A subclass of a supported field: imported as the DecimalField it is."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("max_digits", 9)
        kwargs.setdefault("decimal_places", 2)
        super().__init__(*args, **kwargs)


class LowerCaseText(models.Field):
    """A custom field of its own kind: imported by its column's type (text)."""

    def get_internal_type(self):
        return "LowerCaseText"

    def db_type(self, connection):
        return "text"

    def get_prep_value(self, value):
        return None if value is None else str(value).lower()


class SearchVectorField(models.Field):
    """A search index's column: tsvector in PostgreSQL, plain text in SQLite. Nothing can
    copy it from one to the other: the project rebuilds it (manage.py rebuild_search)."""

    def get_internal_type(self):
        return "SearchVectorField"

    def db_type(self, connection):
        return "tsvector" if connection.vendor == "postgresql" else "text"


class PointField(models.Field):
    """A geometric point: PostgreSQL's point type, which no rule of dbops knows."""

    def get_internal_type(self):
        return "PointField"

    def db_type(self, connection):
        return "point" if connection.vendor == "postgresql" else "text"


class Category(MP_Node):
    name = models.CharField(max_length=100)
    node_order_by = ["name"]

    def __str__(self):
        return self.name


class Supplier(models.Model):
    name = models.CharField(max_length=100, unique=True)

    def __str__(self):
        return self.name


class Product(ClusterableModel):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    name = models.CharField(max_length=200)
    slug = LowerCaseText()
    price = Money()
    category = models.ForeignKey(Category, null=True, on_delete=models.SET_NULL)
    suppliers = models.ManyToManyField(Supplier, through="Supply", related_name="products")
    tags = ClusterTaggableManager(through="ProductTag", blank=True)

    def __str__(self):
        return self.name


class ProductTag(TaggedItemBase):
    content_object = ParentalKey(Product, related_name="tagged_items", on_delete=models.CASCADE)

    def __str__(self):
        return str(self.tag)


class Variant(models.Model):
    product = ParentalKey(Product, related_name="variants", on_delete=models.CASCADE)
    sku = models.CharField(max_length=40, unique=True)
    stock = models.PositiveIntegerField(default=0)
    weight_grams = models.FloatField(null=True)

    def __str__(self):
        return self.sku


class Supply(models.Model):
    product = models.ForeignKey(Product, on_delete=models.CASCADE)
    supplier = models.ForeignKey(Supplier, on_delete=models.CASCADE)
    since = models.DateField()

    def __str__(self):
        return f"{self.supplier} supplies {self.product}"


class Place(models.Model):
    name = models.CharField(max_length=100)
    address = models.TextField(blank=True)

    def __str__(self):
        return self.name


class Shop(Place):
    opens_at = models.TimeField()
    manager_email = models.EmailField(blank=True)


class Delivery(models.Model):
    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="deliveries")
    arrived_at = models.DateTimeField()
    products = models.ManyToManyField(Product, related_name="deliveries", blank=True)

    def __str__(self):
        return f"delivery to {self.shop} at {self.arrived_at}"


class Note(models.Model):
    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE)
    object_id = models.CharField(max_length=64)
    about = GenericForeignKey("content_type", "object_id")
    text = models.TextField()
    extra = models.JSONField(default=dict)

    def __str__(self):
        return self.text


class SearchEntry(models.Model):
    product = models.OneToOneField(Product, on_delete=models.CASCADE, primary_key=True)
    body = SearchVectorField(null=True)

    def __str__(self):
        return f"search entry of {self.product}"


class Pickup(models.Model):
    """Where a shop's orders are collected: a column type dbops cannot copy."""

    shop = models.ForeignKey(Shop, on_delete=models.CASCADE, related_name="pickups")
    location = PointField(null=True)

    def __str__(self):
        return f"pickup at {self.shop}"
