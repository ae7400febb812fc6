"""Thin views over imap/oauth/flow.py: start (a new account or ?account=ID to reconnect), callback.

The admin starts here; the app's account pages (frontend/accounts.py) start the same flow with a
`return_to` page of their own, and the one callback registered with the provider sends the user
back there.
"""

from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse

from imap.models import Account
from imap.oauth import flow


@staff_member_required  # the admin's "Connect with ..." buttons
def start(request, provider):
    account = None
    if request.GET.get("account"):
        account = get_object_or_404(Account, pk=request.GET["account"], owner=request.user)
    try:
        return redirect(flow.start(request, provider, account))
    except flow.FlowError as exc:
        messages.error(request, str(exc))
        return redirect("admin:imap_account_add")


@login_required  # the flow itself is bound to the session that started it (admin or app)
def callback(request):
    back = flow.return_to(request)
    failed = back or reverse("admin:imap_account_add")
    try:
        account = flow.finish(request)
    except flow.FlowError as exc:
        messages.error(request, str(exc))
        return redirect(failed)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect(failed)
    messages.success(request, f"Connected {account.email}; its first sync has started.")
    if back:
        return redirect(f"{back}?{urlencode({'connected': account.pk})}")
    return redirect(reverse("admin:imap_account_change", args=[account.pk]))
