"""An attached message (message/rfc822) viewed in the reader: its HTML sanitized like any
message's, in the same locked-down frame document, remote images only when asked, and only for
those who may see the message that carries it."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

import pytest
from django.urls import reverse

from pipeline.models import Message
from pipeline.standardize import standardize
from tests.builders import ingest

pytestmark = pytest.mark.django_db

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "eml"
if not CORPUS.is_dir():
    CORPUS = Path("/work/shared/corpus/eml")


def received(owner, raw: bytes) -> Message:
    message = ingest(owner, raw)
    standardize(message.pk)
    message.refresh_from_db()
    return message


def hostile_forward() -> bytes:
    inner = EmailMessage()
    inner["From"] = "Mallory <mallory@example.test>"
    inner["To"] = "dora@example.test"
    inner["Subject"] = "Invoice overdue"
    inner.set_content("Pay now.")
    inner.add_alternative('<p onclick="steal()">Pay <b>now</b>.</p><script>steal()</script>'
                          '<img src="https://tracker.example.test/open.gif" alt="pixel">', subtype="html")
    outer = EmailMessage()
    outer["From"] = "Dora <dora@example.test>"
    outer["To"] = "alice@example.test"
    outer["Subject"] = "Fwd: Invoice overdue"
    outer.set_content("See the attached message.")
    outer.add_attachment(inner)
    outer.add_attachment(b"%PDF-1.4 not really", maintype="application", subtype="pdf", filename="x.pdf")
    return outer.as_bytes()


def parts(message):
    by_type = {a.content_type.split(";")[0]: a for a in message.attachments.all()}
    return by_type["message/rfc822"], by_type["application/pdf"]


def test_the_attached_html_is_sanitized_framed_and_blocks_remote_images_until_asked(client, alice, bob):
    attached, pdf = parts(received(alice, hostile_forward()))
    client.force_login(alice)
    page = client.get(reverse("frontend:attached_message", args=[attached.pk])).content.decode()
    body_url = reverse("frontend:attached_message_body", args=[attached.pk])
    assert f'data-src="{body_url}"' in page and 'sandbox="allow-same-origin allow-popups' in page
    assert 'id="load-remote"' in page

    response = client.get(body_url)
    body = response.content.decode()
    assert "Pay <b>now</b>." in body
    assert "<script" not in body.split("</head>")[1] and "onclick" not in body and "steal" not in body
    assert 'data-remote-src="https://tracker.example.test/open.gif"' in body and ' src="https://' not in body
    policy = response["Content-Security-Policy"]
    assert "img-src data: ;" in policy and "sandbox" in policy and "https:" not in policy
    assert response["X-Frame-Options"] == "SAMEORIGIN" and response["Cache-Control"] == "private, no-store"

    remote = client.get(body_url + "?remote=1")
    assert 'src="https://tracker.example.test/open.gif"' in remote.content.decode()
    assert "https:" in remote["Content-Security-Policy"]

    # Not a message: no frame for it. Not Alice's: as if it did not exist.
    assert client.get(reverse("frontend:attached_message_body", args=[pdf.pk])).status_code == 404
    client.force_login(bob)
    assert client.get(body_url).status_code == 404


def test_a_real_forwarded_message_has_its_html_and_its_text(client, alice):
    attached, = received(alice, (CORPUS / "flanker__enclosed.eml").read_bytes()).attachments.filter(
        content_type__startswith="message/")
    client.force_login(alice)
    page = client.get(reverse("frontend:attached_message", args=[attached.pk])).content.decode()
    assert 'data-view="html" aria-pressed="true"' in page and 'id="load-remote"' not in page
    body = client.get(reverse("frontend:attached_message_body", args=[attached.pk])).content.decode()
    assert "kicking ass" in body and "чтобы я без вас делал" in body
    assert 'href="http://mailgun.net"' in body  # links kept (they open outside the sandbox)
