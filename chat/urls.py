from django.urls import path

from . import views

urlpatterns = [
    path("auth/token/", views.TokenView.as_view(), name="api-token"),
    path("auth/ws-ticket/", views.TicketView.as_view(), name="api-ws-ticket"),
    path("rooms/", views.RoomListView.as_view(), name="api-rooms"),
    path("rooms/<str:slug>/members/", views.MemberView.as_view(), name="api-room-members"),
    path("rooms/<str:slug>/messages/", views.MessageListView.as_view(), name="api-room-messages"),
    path("rooms/<str:slug>/read/", views.ReadView.as_view(), name="api-room-read"),
    path("rooms/<str:slug>/receipts/", views.ReceiptListView.as_view(), name="api-room-receipts"),
    path("rooms/<str:slug>/presence/", views.PresenceView.as_view(), name="api-room-presence"),
]
