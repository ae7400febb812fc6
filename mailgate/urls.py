"""The composition root's URLs: the one place (with asgi.py) that names every app."""

from django.contrib import admin
from django.urls import include, path

from imap import health as imap_health
from mailgate import health

urlpatterns = [
    path("healthz", health.view(idle_manager=imap_health.idle_manager), name="healthz"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("imap/", include("imap.urls")),
    path("hooks/", include("outgoing.urls")),
    path("", include("frontend.urls")),
]
