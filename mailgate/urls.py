"""The composition root's URLs: the one place (with asgi.py) that names every app."""

from django.contrib import admin
from django.urls import include, path

from frontend import links
from imap import health as imap_health
from mailgate import health

urlpatterns = [
    path("healthz", health.view(idle_manager=imap_health.idle_manager), name="healthz"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("imap/", include("imap.urls")),
    # Before the hooks: "files" is not a channel kind. Named here, at the root, because outgoing
    # makes these links (outgoing.formatting.attachment_url) and the frontend serves them.
    path("hooks/files/<str:token>/", links.attachment, name="attachment_link"),
    path("hooks/", include("inbound.urls")),
    path("", include("frontend.urls")),
]
