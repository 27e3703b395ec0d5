from django.urls import path

from notifications import views

urlpatterns = [
    path("", views.settings_view, name="notifications"),
    path("<int:channel_id>/delete/", views.channel_delete_view, name="notification-delete"),
    path("<int:channel_id>/test/", views.channel_test_view, name="notification-test"),
]
