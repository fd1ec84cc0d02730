from django.urls import path

from . import pages

urlpatterns = [
    path("", pages.index, name="index"),
    path("rooms/<str:slug>/", pages.room, name="room"),
]
