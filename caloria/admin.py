"""The admin staff work in: users first, then their food and weight logs."""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce

from caloria.models import FoodEntry, User, WeightEntry


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = (
        "username",
        "email",
        "is_vip",
        "daily_calorie_goal",
        "date_joined",
        "last_login",
        "food_entry_count",
        "is_staff",
    )
    list_filter = ("is_vip", "is_staff", "is_superuser", "is_active", "date_joined")
    search_fields = ("username", "email", "first_name", "last_name")
    ordering = ("-date_joined",)
    fieldsets = (
        *DjangoUserAdmin.fieldsets,
        ("Caloria", {"fields": ("is_vip", "daily_calorie_goal")}),
    )

    def get_queryset(self, request):
        # A correlated subquery is evaluated for the shown page only, and Django leaves it
        # out of the paginator's COUNT, so the list costs the same with 10 or 10M entries.
        entry_counts = (
            FoodEntry.objects.filter(user=OuterRef("pk"))
            .order_by()
            .values("user")
            .annotate(count=Count("*"))
            .values("count")
        )
        return (
            super()
            .get_queryset(request)
            .annotate(
                food_entry_count=Coalesce(Subquery(entry_counts, output_field=IntegerField()), 0)
            )
        )

    @admin.display(description="food entries", ordering="food_entry_count")
    def food_entry_count(self, user):
        return user.food_entry_count


@admin.register(FoodEntry)
class FoodEntryAdmin(admin.ModelAdmin):
    list_display = ("eaten_at", "user", "name", "calories", "meal", "protein", "carbs", "fat")
    list_select_related = ("user",)
    list_filter = ("meal", "eaten_at")
    search_fields = ("name", "user__username")
    date_hierarchy = "eaten_at"
    autocomplete_fields = ("user",)
    readonly_fields = ("created_at",)
    show_full_result_count = False


@admin.register(WeightEntry)
class WeightEntryAdmin(admin.ModelAdmin):
    list_display = ("measured_on", "user", "weight_kg")
    list_select_related = ("user",)
    search_fields = ("user__username",)
    date_hierarchy = "measured_on"
    autocomplete_fields = ("user",)
    show_full_result_count = False
