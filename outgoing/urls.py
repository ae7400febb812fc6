from django.urls import path

from outgoing import views

app_name = "outgoing"
urlpatterns = [
    # Before the hook pattern: "files" is not a channel kind.
    path("files/<str:token>/", views.attachment, name="attachment"),
    path("<str:kind>/<str:token>/", views.hook, name="hook"),
]
