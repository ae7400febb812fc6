"""The composition root's URLs: the one place (with asgi.py) that names every app."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from frontend import links
from imap import health as imap_health, tasks as imap_tasks
from mailgate import health, metrics
from pipeline import backlog

urlpatterns = [
    path("healthz", health.view(idle_manager=imap_health.idle_manager), name="healthz"),
    # Prometheus; the backlog of each stage is read from the database at scrape time.
    path("metrics", metrics.metrics_view(backlog.backlog, imap_tasks.backlog), name="metrics"),
    path("admin/", admin.site.urls),
    # Django's auth URLs without the password-reset ones: mailgate sends no mail of its own (no
    # EMAIL_* settings), and a reset form would let anyone make the host's local MTA mail users.
    # Staff reset passwords in the admin or with `manage.py changepassword`.
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/password_change/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path("accounts/password_change/done/", auth_views.PasswordChangeDoneView.as_view(),
         name="password_change_done"),
    path("imap/", include("imap.urls")),
    # Before the hooks: "files" is not a channel kind. Named here, at the root, because outgoing
    # makes these links (outgoing.formatting.attachment_url) and the frontend serves them.
    path("hooks/files/<str:token>/", links.attachment, name="attachment_link"),
    path("hooks/", include("inbound.urls")),
    path("", include("frontend.urls")),
]
