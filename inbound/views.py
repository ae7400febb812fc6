"""Inbound webhooks at /hooks/<kind>/<token>/: find the channel, hand the call to its kind
(inbound/channels/), answer with what the kind says, or with its refusal."""

from __future__ import annotations

import logging

from django.http import Http404, HttpResponseNotAllowed
from django.views.decorators.csrf import csrf_exempt

from inbound.channels.base import Reject
from inbound.models import InboundChannel
from inbound.receive import BadPayload
from inbound.registry import CHANNELS, channel_for
from mailgate import metrics

log = logging.getLogger(__name__)


@csrf_exempt
@metrics.count_webhooks(CHANNELS)
def hook(request, kind: str, token: str):
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    channel = InboundChannel.objects.filter(kind=kind, token=token, enabled=True).select_related("owner").first()
    if kind not in CHANNELS or channel is None:
        raise Http404("no such channel")
    handler = channel_for(channel)
    try:
        return handler.handle(request)
    except BadPayload as exc:
        reject = Reject(400, str(exc))
    except Reject as exc:
        reject = exc
    log.info("webhook %s channel %s: %s %s", kind, channel.pk, reject.status, reject.text)
    return handler.refused(reject)
