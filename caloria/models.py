"""Caloria's domain: people, what they ate, and what they weighed."""

from django.contrib.auth.models import AbstractUser
from django.db import models
from django.db.models import Q
from django.utils import timezone

MAX_DAILY_CALORIE_GOAL = 20_000
MAX_ENTRY_CALORIES = 50_000


class User(AbstractUser):
    # Longer than Django's 128: hashes imported from the Flask app (werkzeug scrypt) are
    # kept until the user's next login upgrades them (see caloria/hashers.py).
    password = models.CharField("password", max_length=256)
    is_vip = models.BooleanField("VIP", default=False)
    daily_calorie_goal = models.PositiveIntegerField(
        null=True, blank=True, help_text="Kilocalories a day; empty when the user set none."
    )

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"
        constraints = [
            models.CheckConstraint(
                condition=Q(daily_calorie_goal__isnull=True)
                | Q(daily_calorie_goal__gte=1, daily_calorie_goal__lte=MAX_DAILY_CALORIE_GOAL),
                name="user_daily_calorie_goal_in_range",
            ),
        ]


class Meal(models.TextChoices):
    BREAKFAST = "breakfast"
    LUNCH = "lunch"
    DINNER = "dinner"
    SNACK = "snack"


def _grams(verbose_name):
    return models.DecimalField(
        verbose_name, max_digits=7, decimal_places=2, null=True, blank=True, help_text="Grams."
    )


class FoodEntry(models.Model):
    # No index of its own: food_user_eaten_at starts with user, so it serves every lookup by
    # user (and the cascade on delete); a second index would only slow every insert.
    user = models.ForeignKey(
        User, on_delete=models.CASCADE, related_name="food_entries", db_index=False
    )
    eaten_at = models.DateTimeField(default=timezone.now)
    name = models.CharField(max_length=200)
    calories = models.PositiveIntegerField(help_text="Kilocalories.")
    protein = _grams("protein")
    carbs = _grams("carbohydrates")
    fat = _grams("fat")
    meal = models.CharField(max_length=10, choices=Meal.choices, blank=True)
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "food entries"
        ordering = ["-eaten_at", "-id"]
        indexes = [
            models.Index(fields=["user", "-eaten_at"], name="food_user_eaten_at"),
            models.Index(fields=["eaten_at"], name="food_eaten_at"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(calories__lte=MAX_ENTRY_CALORIES), name="food_calories_in_range"
            ),
            models.CheckConstraint(
                condition=(Q(protein__isnull=True) | Q(protein__gte=0))
                & (Q(carbs__isnull=True) | Q(carbs__gte=0))
                & (Q(fat__isnull=True) | Q(fat__gte=0)),
                name="food_macros_not_negative",
            ),
            models.CheckConstraint(
                condition=Q(meal__in=[*Meal.values, ""]), name="food_meal_known"
            ),
        ]

    def __str__(self):
        return f"{self.name} ({self.calories} kcal)"


class WeightEntry(models.Model):
    # No index of its own: the unique (user, measured_on) index serves lookups by user.
    user = models.ForeignKey(
        User, on_delete=models.CASCADE, related_name="weight_entries", db_index=False
    )
    measured_on = models.DateField()
    weight_kg = models.DecimalField("weight (kg)", max_digits=5, decimal_places=2)

    class Meta:
        verbose_name_plural = "weight entries"
        ordering = ["-measured_on", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "measured_on"], name="weight_one_per_user_and_day"
            ),
            models.CheckConstraint(
                condition=Q(weight_kg__gt=0, weight_kg__lt=700), name="weight_kg_in_range"
            ),
        ]
        indexes = [models.Index(fields=["measured_on"], name="weight_measured_on")]

    def __str__(self):
        return f"{self.weight_kg} kg on {self.measured_on}"
