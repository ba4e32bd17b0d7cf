"""The URLs a project of dbops alone includes (see tests/minimal_settings.py)."""

from django.contrib import admin
from django.urls import include, path

from dbops.urls import status_page_urls

urlpatterns = [
    path("admin/", include(status_page_urls(admin.site))),
    path("admin/", admin.site.urls),
    path("health/", include("dbops.urls")),
]
