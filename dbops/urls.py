from django.urls import path

from dbops import views

urlpatterns = [
    path("", views.all_checks_view, name="health"),
    path("database/", views.database_view, name="health-database"),
    path("live/", views.live, name="health-live"),
]
