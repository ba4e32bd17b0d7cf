from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from caloria.views import home
from dbops.urls import metrics_urlpatterns, status_page_urls

admin.site.site_header = "Caloria administration"
admin.site.site_title = "Caloria admin"

urlpatterns = [
    path("admin/", include(status_page_urls(admin.site))),
    path("admin/", admin.site.urls),
    path("health/", include("dbops.urls")),
    path("", include(metrics_urlpatterns)),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", home, name="home"),
]
