from django.apps import AppConfig


class ProjectConfig(AppConfig):
    name = "project"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import live  # noqa: PLC0415 - models load once apps are ready

        live.register()
