"""`rebuild_search`: fill the search index from the products, as the backend wants it."""

from django.core.management.base import BaseCommand
from django.db import connection

from tests.otherproject.shop.models import Product, SearchEntry


class Command(BaseCommand):
    help = "Rebuild the products' search index (tsvector in PostgreSQL, text in SQLite)."

    def handle(self, *args, **options):
        SearchEntry.objects.all().delete()
        for product in Product.objects.all():
            with connection.cursor() as cursor:
                if connection.vendor == "postgresql":
                    cursor.execute(
                        "INSERT INTO shop_searchentry (product_id, body) "
                        "VALUES (%s, to_tsvector('simple', %s))",
                        [product.pk, product.name],
                    )
                else:
                    SearchEntry.objects.create(product=product, body=product.name.lower())
        self.stdout.write(f"{SearchEntry.objects.count()} products indexed")
