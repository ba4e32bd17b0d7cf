"""Insert one new row into every model of the shop whose key a sequence gives, through the
ORM, and print the new keys: a sequence left behind by an import fails here."""

import datetime
import json

import django

django.setup()

from django.contrib.auth.models import Group, User  # noqa: E402
from django.contrib.contenttypes.models import ContentType  # noqa: E402
from taggit.models import Tag  # noqa: E402

from tests.otherproject.shop.models import (  # noqa: E402
    Delivery,
    Note,
    Place,
    Product,
    ProductTag,
    Shop,
    Supplier,
    Supply,
    Variant,
)

product = Product.objects.create(name="New", slug="new", price="1.00")
shop = Shop.objects.create(name="New shop", opens_at=datetime.time(9))
created = {
    "supplier": Supplier.objects.create(name="New supplier").pk,
    "variant": Variant.objects.create(product=product, sku="NEW-1").pk,
    "supply": Supply.objects.create(
        product=product, supplier=Supplier.objects.first(), since=datetime.date.today()
    ).pk,
    "place": Place.objects.create(name="New place").pk,
    "shop": shop.pk,
    "delivery": Delivery.objects.create(
        shop=shop, arrived_at=datetime.datetime.now(datetime.UTC)
    ).pk,
    "note": Note.objects.create(
        content_type=ContentType.objects.get_for_model(Shop), object_id=str(shop.pk), text="n"
    ).pk,
    "tag": Tag.objects.create(name="brand-new").pk,
    "product_tag": ProductTag.objects.create(
        content_object=product, tag=Tag.objects.get(name="brand-new")
    ).pk,
    "user": User.objects.create(username="newcomer").pk,
    "group": Group.objects.create(name="newcomers").pk,
}
print(json.dumps(created))
