from django.contrib import admin
from django.urls import include, path

from mailgate import health

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("imap/", include("imap.urls")),
    path("hooks/", include("outgoing.urls")),
    path("", include("frontend.urls")),
]
