from django.apps import AppConfig


class CaloriaConfig(AppConfig):
    name = "caloria"
    default_auto_field = "django.db.models.BigAutoField"
