from django.apps import AppConfig

from django_realtime import checks


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = "Chat"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here, as Django's signal handlers are: it imports models.
        from django_realtime import credentials

        from . import live

        checks.register_checks()
        credentials.connect_signals()
        live.register()
