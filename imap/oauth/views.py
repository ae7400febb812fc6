"""Thin views over imap/oauth/flow.py: start (a new account or ?account=ID to reconnect), callback."""

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse

from imap.models import Account
from imap.oauth import flow


@staff_member_required  # accounts are added in the admin
def start(request, provider):
    account = None
    if request.GET.get("account"):
        account = get_object_or_404(Account, pk=request.GET["account"], owner=request.user)
    try:
        return redirect(flow.start(request, provider, account))
    except flow.FlowError as exc:
        messages.error(request, str(exc))
        return redirect("admin:imap_account_add")


@staff_member_required
def callback(request):
    try:
        account = flow.finish(request)
    except flow.FlowError as exc:
        messages.error(request, str(exc))
        return redirect("admin:imap_account_add")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("admin:imap_account_add")
    messages.success(request, f"Connected {account.email}; its first sync has started.")
    return redirect(reverse("admin:imap_account_change", args=[account.pk]))
