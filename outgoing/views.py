"""Inbound webhooks at /hooks/<kind>/<token>/ and signed attachment links at /hooks/files/<token>/.

Order of checks on every hook: POST only (405) → an enabled channel of that kind (404) → size
(413, by Content-Length and by what is actually read) → signature (403, constant-time) → only
then is the payload interpreted (400 when malformed) and a message created (outgoing.inbound).
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from urllib.parse import parse_qsl

from django.conf import settings
from django.core import signing
from django.db import IntegrityError, transaction
from django.http import FileResponse, Http404, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from outgoing import formatting, inbound, signatures
from outgoing.models import InboundChannel, WebhookReplay
from pipeline.models import Attachment, Message

log = logging.getLogger(__name__)

TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


class Reject(Exception):
    def __init__(self, status: int, text: str):
        super().__init__(text)
        self.status, self.text = status, text


@csrf_exempt
def hook(request, kind: str, token: str):
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    handler = HANDLERS.get(kind)
    channel = InboundChannel.objects.filter(kind=kind, token=token, enabled=True).select_related("owner").first()
    if handler is None or channel is None:
        raise Http404("no such channel")
    try:
        return handler(request, channel)
    except Reject as reject:
        log.info("webhook %s channel %s: %s %s", kind, channel.pk, reject.status, reject.text)
        if kind == "twilio":
            return HttpResponse(reject.text, status=reject.status, content_type="text/plain; charset=utf-8")
        return JsonResponse({"ok": False, "error": reject.text}, status=reject.status)


def read_body(request) -> bytes:
    """The request body, refusing more than MAILGATE_WEBHOOK_MAX_BYTES whatever Content-Length says."""
    limit = settings.MAILGATE_WEBHOOK_MAX_BYTES
    declared = request.META.get("CONTENT_LENGTH") or ""
    if declared:
        if not declared.isdigit():
            raise Reject(400, "bad Content-Length")
        if int(declared) > limit:
            raise Reject(413, f"body larger than {limit} bytes")
    body = request.read(limit + 1)
    if len(body) > limit:
        raise Reject(413, f"body larger than {limit} bytes")
    return body


def _secrets(channel) -> dict:
    try:
        return channel.get_secrets()
    except Exception:  # CredentialsUnreadable: nothing can be verified, so nothing is accepted
        log.warning("webhook channel %s: secrets do not decrypt; rejecting every call", channel.pk)
        return {}


# ------------------------------------------------------------------ Twilio


def twilio_public_url(request, channel) -> str:
    """The URL Twilio signed: our public base URL (never the Host or X-Forwarded-* headers, which
    the caller controls) + the path, or the channel's `public_url` when a proxy rewrites the path,
    + the query string as received."""
    base = settings.MAILGATE_PUBLIC_BASE_URL.rstrip("/")
    override = (channel.config or {}).get("public_url")
    if override:
        url = override if "://" in override else base + "/" + override.lstrip("/")
    else:
        url = base + request.path
    query = request.META.get("QUERY_STRING", "")
    return f"{url}?{query}" if query and "?" not in url else url


def twilio_hook(request, channel):
    body = read_body(request)
    try:
        # Twilio signs the decoded parameters, so they must be parsed first; nothing else is done
        # with them before the signature matches.
        params = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                           max_num_fields=1000)
    except (UnicodeDecodeError, ValueError):
        raise Reject(400, "not a form-encoded body") from None
    secrets = _secrets(channel)
    tokens = [secrets.get("auth_token"), secrets.get("previous_auth_token")]
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signatures.twilio_valid(twilio_public_url(request, channel), params, signature, tokens):
        raise Reject(403, "bad signature")
    try:
        inbound.receive_twilio(channel, params, auth_token=secrets.get("auth_token") or "")
    except inbound.BadPayload as exc:
        raise Reject(400, str(exc)) from None
    return HttpResponse(TWIML_EMPTY, content_type="text/xml")


# ------------------------------------------------------------------ Telegram


def telegram_hook(request, channel):
    expected = _secrets(channel).get("secret_token") or ""
    given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
    if not expected or not signatures.equal(given, expected):
        raise Reject(403, "bad secret token")
    body = read_body(request)
    try:
        update = json.loads(body)
        inbound.receive_telegram(channel, update, bot_token=_secrets(channel).get("bot_token", ""))
    except ValueError as exc:  # json.JSONDecodeError and BadPayload
        raise Reject(400, str(exc) if isinstance(exc, inbound.BadPayload) else "not JSON") from None
    return JsonResponse({"ok": True})


# ------------------------------------------------------------------ generic signed JSON


def generic_hook(request, channel):
    body = read_body(request)
    secrets = _secrets(channel)
    tolerance = settings.MAILGATE_WEBHOOK_TOLERANCE
    signature = request.headers.get("X-Mailgate-Signature", "").strip().lower()
    if not signatures.signed_json_valid([secrets.get("current"), secrets.get("previous")],
                                        request.headers.get("X-Mailgate-Timestamp", ""), body, signature,
                                        tolerance=tolerance):
        raise Reject(403, "bad signature or timestamp")
    # A replay row outlives the timestamp window, after which the signature is refused anyway.
    WebhookReplay.objects.filter(seen_at__lt=timezone.now() - timedelta(seconds=2 * tolerance + 60)).delete()
    try:
        payload = json.loads(body)
    except ValueError:
        raise Reject(400, "not JSON") from None
    with transaction.atomic():
        try:
            with transaction.atomic():
                WebhookReplay.objects.create(channel=channel, signature=signature.removeprefix("sha256="))
        except IntegrityError:
            # The very same signed request again: it has no effect. Say which message it made.
            existing = Message.objects.filter(channel=channel, identity=inbound.generic_identity(payload, body)).first()
            return JsonResponse({"ok": True, "duplicate": True,
                                 "message_id": str(existing.pk) if existing else None}, status=200)
        try:
            message, created = inbound.receive_generic(channel, payload, body)
        except inbound.BadPayload as exc:
            raise Reject(400, str(exc)) from None
    return JsonResponse({"ok": True, "message_id": str(message.pk) if message else None,
                         "duplicate": not created}, status=202)


HANDLERS = {
    InboundChannel.Kind.TWILIO: twilio_hook,
    InboundChannel.Kind.TELEGRAM: telegram_hook,
    InboundChannel.Kind.GENERIC: generic_hook,
}


# ------------------------------------------------------------------ attachment links


def attachment(request, token: str):
    """Download an attachment through a link a transport sent (formatting.attachment_url)."""
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    try:
        pk = signing.TimestampSigner(salt=formatting.ATTACHMENT_LINK_SALT).unsign(
            token, max_age=timedelta(days=settings.MAILGATE_ATTACHMENT_LINK_DAYS))
    except signing.BadSignature:  # expired links too (SignatureExpired is a BadSignature)
        raise Http404("no such attachment") from None
    item = Attachment.objects.filter(pk=pk).first()
    if item is None or not item.file:
        raise Http404("no such attachment")
    return FileResponse(item.file.open("rb"), as_attachment=True, filename=item.filename,
                        content_type=item.content_type or "application/octet-stream")
