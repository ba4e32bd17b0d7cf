"""Fill a development or test database with the same demo users and food log every time.

Deterministic (a seeded random generator and a fixed end date) so screenshots, benchmarks and
bug reports can be reproduced; fast (bulk inserts, one password hash) so 100k entries take
seconds; and refused in production, where demo rows would be real rows.
"""

import random
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections, transaction

from caloria.models import FoodEntry, Meal, User, WeightEntry

DEMO_PREFIX = "demo"
DEMO_END = date(2026, 11, 1)
DEV_SUPERUSER = "admin"
DEV_SUPERUSER_PASSWORD = "caloria-dev-admin"
BATCH_SIZE = 5000

FOODS = [
    ("Oatmeal with berries", 320, Meal.BREAKFAST),
    ("Scrambled eggs", 210, Meal.BREAKFAST),
    ("Café con leche ☕", 90, Meal.BREAKFAST),
    ("Brezel mit Butter", 310, Meal.BREAKFAST),
    ("Chicken salad", 450, Meal.LUNCH),
    ("Lentil soup", 380, Meal.LUNCH),
    ("Tuna sandwich", 520, Meal.LUNCH),
    ("Salmon with rice", 640, Meal.DINNER),
    ("Vegetable curry", 560, Meal.DINNER),
    ("Spaghetti bolognese", 720, Meal.DINNER),
    ("Apple", 95, Meal.SNACK),
    ("Greek yoghurt", 150, Meal.SNACK),
    ("Handful of almonds", 170, Meal.SNACK),
]


class Command(BaseCommand):
    help = (
        "Create deterministic demo users with food and weight entries (development and test "
        "only), plus a development superuser whose credentials are printed."
    )

    def add_arguments(self, parser):
        parser.add_argument("--users", type=int, default=50, help="Demo users (default 50).")
        parser.add_argument(
            "--entries", type=int, default=2000, help="Food entries in all (default 2000)."
        )
        parser.add_argument(
            "--weight-days",
            type=int,
            default=30,
            help="Days of weight entries per user (default 30).",
        )
        parser.add_argument("--seed", type=int, default=42, help="Random seed (default 42).")
        parser.add_argument(
            "--reset", action="store_true", help="Delete earlier demo users and their data first."
        )
        parser.add_argument(
            "--no-superuser", action="store_true", help="Do not create the development superuser."
        )
        parser.add_argument(
            "--database", default=DEFAULT_DB_ALIAS, choices=tuple(connections), help="Alias."
        )

    def handle(
        self, *args, users, entries, weight_days, seed, reset, no_superuser, database, **options
    ):
        if settings.CALORIA_ENV == "production":
            raise CommandError("seed_demo is refused in production: demo rows would be real rows.")
        for name, value in (
            ("--users", users),
            ("--entries", entries),
            ("--weight-days", weight_days),
        ):
            if value < 0:
                raise CommandError(f"{name} must be 0 or more; got {value}.")
        if entries and not users:
            raise CommandError("--entries needs at least one demo user (--users).")

        demo_users = User.objects.using(database).filter(username__startswith=f"{DEMO_PREFIX}-")
        with transaction.atomic(using=database):
            if reset:
                deleted = demo_users.count()
                demo_users.delete()
                self.log(f"Deleted {deleted} earlier demo users and their entries.")
            if demo_users.exists():
                self.log(
                    f"Demo data already present ({demo_users.count()} demo users); "
                    "use --reset to recreate it."
                )
            else:
                self.create_demo_data(database, random.Random(seed), users, entries, weight_days)
            if not no_superuser:
                self.ensure_superuser(database)

    def create_demo_data(self, database, rng, user_count, entry_count, weight_days):
        password = make_password(None)
        joined = datetime.combine(DEMO_END - timedelta(days=365), time(9), tzinfo=UTC)
        users = [
            User(
                username=f"{DEMO_PREFIX}-{number:06d}",
                email=f"{DEMO_PREFIX}-{number:06d}@example.com",
                first_name=rng.choice(["Ana", "Ben", "Chloé", "Dmitri", "Eva", "Jürgen", "Mai"]),
                is_vip=rng.random() < 0.1,
                daily_calorie_goal=rng.choice([None, 1800, 2000, 2200, 2500]),
                date_joined=joined + timedelta(minutes=number),
                password=password,
            )
            for number in range(1, user_count + 1)
        ]
        users = User.objects.using(database).bulk_create(users, batch_size=BATCH_SIZE)
        self.log(f"Created {len(users)} demo users.")

        created = 0
        batch = []
        end = datetime.combine(DEMO_END, time(0), tzinfo=UTC)
        for index in range(entry_count):
            name, calories, meal = rng.choice(FOODS)
            batch.append(
                FoodEntry(
                    user=users[index % len(users)],
                    eaten_at=end - timedelta(minutes=rng.randrange(365 * 24 * 60)),
                    name=name,
                    calories=calories + rng.randrange(-40, 41),
                    protein=_grams(rng),
                    carbs=_grams(rng),
                    fat=_grams(rng),
                    meal=meal,
                )
            )
            if len(batch) == BATCH_SIZE:
                created += len(FoodEntry.objects.using(database).bulk_create(batch))
                batch = []
                self.log(f"  {created} food entries…", verbosity=2)
        created += len(FoodEntry.objects.using(database).bulk_create(batch))
        self.log(f"Created {created} food entries.")

        weights = [
            WeightEntry(
                user=user,
                measured_on=DEMO_END - timedelta(days=day),
                weight_kg=Decimal(rng.randrange(5000, 11000)) / 100,
            )
            for user in users
            for day in range(weight_days)
        ]
        weights = WeightEntry.objects.using(database).bulk_create(weights, batch_size=BATCH_SIZE)
        self.log(f"Created {len(weights)} weight entries.")

    def ensure_superuser(self, database):
        if User.objects.using(database).filter(username=DEV_SUPERUSER).exists():
            self.log(
                f"Development superuser '{DEV_SUPERUSER}' already exists "
                f"(password '{DEV_SUPERUSER_PASSWORD}' unless you changed it)."
            )
            return
        User.objects.db_manager(database).create_superuser(
            DEV_SUPERUSER, "admin@example.com", DEV_SUPERUSER_PASSWORD
        )
        self.log(
            f"Created development superuser: username '{DEV_SUPERUSER}', "
            f"password '{DEV_SUPERUSER_PASSWORD}'."
        )

    def log(self, message, verbosity=1):
        if self.verbosity >= verbosity:
            self.stdout.write(message)

    def execute(self, *args, **options):
        self.verbosity = options.get("verbosity", 1)
        return super().execute(*args, **options)


def _grams(rng):
    if rng.random() < 0.1:
        return None
    return Decimal(rng.randrange(0, 6000)) / 100
