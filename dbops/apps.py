from django.apps import AppConfig


class DbopsConfig(AppConfig):
    name = "dbops"
    verbose_name = "Database operations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Importing registers the system checks; nothing here may touch the database.
        from dbops import checks  # noqa: F401
