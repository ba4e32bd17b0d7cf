"""dbops' URLs: the health endpoints (`urlpatterns`, included at `health/`), `/metrics`
(`metrics_urlpatterns`, included at the root), and the database
status page, which belongs under a project's admin site (`status_page_urls`)."""

from django.urls import path

from dbops import views

urlpatterns = [
    path("", views.all_checks_view, name="health"),
    path("database/", views.database_view, name="health-database"),
    path("live/", views.live, name="health-live"),
]

# `/metrics` for Prometheus, beside the health URLs: `path("", include(metrics_urlpatterns))`.
metrics_urlpatterns = [path("metrics", views.metrics, name="dbops-metrics")]


def status_page_urls(site=None) -> list:
    """The database status page (`database/`, named `dbops-database-status`) behind the admin
    site's staff login, in that site's look.

    Include it at the admin's prefix *before* the admin's own URLs, whose catch-all would
    answer first: `path("admin/", include(status_page_urls(admin.site)))`.
    """
    from django.contrib import admin

    from dbops.status import database_status

    site = site or admin.site

    def database_status_page(request):
        return database_status(request, site)

    return [path("database/", site.admin_view(database_status_page), name="dbops-database-status")]
