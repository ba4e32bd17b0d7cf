"""Fill the shop through its own ORM, with every kind of row it has (run with its settings).

Deterministic, so two fills give the same rows. The starting rows its migrations made are
used too: the root category gets children, the in-house supplier supplies products.
"""

import datetime
import decimal
import uuid

import django

django.setup()

from django.contrib.auth.models import Group, User  # noqa: E402
from django.contrib.contenttypes.models import ContentType  # noqa: E402

from tests.otherproject.shop.models import (  # noqa: E402
    Category,
    Delivery,
    Note,
    Pickup,
    Place,
    Product,
    Shop,
    Supplier,
    Supply,
    Variant,
)

PRODUCTS = 40


def fill() -> None:
    root = Category.objects.get(name="All")
    fruit = root.add_child(name="Fruit")
    apples = fruit.add_child(name="Apples")
    tools = root.add_child(name="Tools")
    in_house = Supplier.objects.get(name="In-house")
    farm = Supplier.objects.create(name="Green Farm")
    shops = [
        Shop.objects.create(name=f"Shop {n}", opens_at=datetime.time(8, n), address=f"Street {n}")
        for n in range(3)
    ]
    for n in range(PRODUCTS):
        product = Product(
            id=uuid.UUID(int=n + 1),
            name=f"Product {n} é",
            slug=f"Product-{n}",
            price=decimal.Decimal(n) + decimal.Decimal("0.99"),
            category=[fruit, apples, tools, None][n % 4],
        )
        product.tags.add(*(["fresh", "sale"] if n % 2 else ["tool"]))
        for v in range(n % 3):
            product.variants.add(
                Variant(sku=f"SKU-{n}-{v}", stock=v * 7, weight_grams=None if v else 12.5)
            )
        product.save()
        Supply.objects.create(
            product=product,
            supplier=farm if n % 2 else in_house,
            since=datetime.date(2024, 1, 1 + n % 28),
        )
    Pickup.objects.create(shop=shops[0], location="(48.85, 2.35)")
    for n, shop in enumerate(shops):
        delivery = Delivery.objects.create(
            shop=shop, arrived_at=datetime.datetime(2025, 3, 1 + n, 9, 30, 15, 250000, datetime.UTC)
        )
        delivery.products.set(Product.objects.order_by("id")[n::3])
    product_type = ContentType.objects.get_for_model(Product)
    for product in Product.objects.order_by("id")[:5]:
        Note.objects.create(
            content_type=product_type,
            object_id=str(product.pk),
            text=f"About {product.name}\twith a tab",
            extra={"stars": 4.5, "by": ["ann", "bo"]},
        )
    Note.objects.create(
        content_type=ContentType.objects.get_for_model(Place),
        object_id=str(Place.objects.get(name="Warehouse").pk),
        text="The warehouse",
    )
    editors = Group.objects.get(name="editors")
    user = User.objects.create_user("editor", "editor@example.com", "pw")
    user.groups.add(editors)


if __name__ == "__main__":
    fill()
