"""The user-facing side of Caloria, as small as it is: sign in and see your day."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.utils import timezone


@login_required
def home(request):
    today = timezone.now().date()
    entries = request.user.food_entries.filter(eaten_at__date=today).order_by("eaten_at")
    total = sum(entry.calories for entry in entries)
    return render(
        request,
        "caloria/home.html",
        {"entries": entries, "total": total, "goal": request.user.daily_calorie_goal},
    )
