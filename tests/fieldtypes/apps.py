from django.apps import AppConfig


class FieldTypesConfig(AppConfig):
    name = "tests.fieldtypes"
    label = "fieldtypes"
    default_auto_field = "django.db.models.BigAutoField"
