from django.urls import path

from imap.oauth import views as oauth_views

app_name = "imap"
urlpatterns = [
    path("oauth/callback/", oauth_views.callback, name="oauth_callback"),
    path("oauth/<str:provider>/start/", oauth_views.start, name="oauth_start"),
]
