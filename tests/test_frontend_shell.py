"""The inbox shell without a browser: search tokens and attachment names, the counts behind the
heading and the sidebar, the favicon, and the theme's colour contrast (WCAG AA)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from frontend import search
from tests.builders import account_row, make_attachment, stored_message

CSS = Path(__file__).resolve().parent.parent / "frontend" / "static" / "frontend" / "mailgate.css"


def search_subjects(client, query):
    response = client.get("/api/messages/", {"q": query})
    assert response.status_code == 200, response.content
    return sorted(row["subject"] for row in response.json()["results"])


@pytest.mark.django_db
def test_a_hyphenated_search_is_a_phrase_and_does_not_match_its_parts_apart(client, alice):
    account = account_row(alice)
    stored_message(alice, account, subject="LIVE-A report", text="sent before noon")
    stored_message(alice, account, subject="LIVE-B report", text="the second one")
    client.force_login(alice)
    assert search_subjects(client, "LIVE-B") == ["LIVE-B report"]
    assert search_subjects(client, "live-a") == ["LIVE-A report"]
    # Plain words still match anywhere, the last one as a prefix (search as you type).
    assert search_subjects(client, "report bef") == ["LIVE-A report"]


def test_query_syntax_keeps_phrases_apart_from_words():
    assert search.groups("LIVE-B  budget q3") == [["LIVE", "B"], ["budget"], ["q3"]]
    assert search.fts5_query([["LIVE", "B"], ["bud"]]) == '"LIVE B" AND "bud" *'
    assert search.tsquery([["LIVE", "B"], ["bud"]]) == "(live <-> b) & bud:*"
    assert search.groups('a"b -- ""') == [["a", "b"]]


@pytest.mark.django_db
def test_attachment_file_names_are_searchable(client, alice):
    account = account_row(alice)
    message = stored_message(alice, account, subject="Monthly figures", text="see attached")
    stored_message(alice, account, subject="Unrelated", text="nothing attached")
    make_attachment(message, filename="report-299.pdf", content_type="application/pdf", content=b"%PDF-1.4")
    client.force_login(alice)
    assert search_subjects(client, "report-299.pdf") == ["Monthly figures"]
    assert search_subjects(client, "299.pdf") == ["Monthly figures"]


@pytest.mark.django_db
def test_counts_follow_the_filters_and_the_sidebar_counts_unread_per_folder(client, alice, bob):
    account = account_row(alice)
    stored_message(alice, account, subject="One", flags=["\\Seen"])
    stored_message(alice, account, subject="Two")
    stored_message(alice, account, subject="Three", folder="Archive")
    stored_message(bob, account_row(bob), subject="Not Alice's")
    client.force_login(alice)
    assert client.get("/api/messages/counts/").json() == {"total": 3, "unread": 2}
    inbox = account.folders.get(name="INBOX")
    assert client.get("/api/messages/counts/", {"folder": inbox.pk}).json() == {"total": 2, "unread": 1}
    assert client.get("/api/messages/counts/", {"q": "two"}).json() == {"total": 1, "unread": 1}
    folders = {f["name"]: f for f in client.get("/api/folders/").json()["results"]}
    assert {name: f["unread"] for name, f in folders.items()} == {"Archive": 1, "INBOX": 1, "Trash": 0}
    assert folders["Trash"]["trash"] and not folders["INBOX"]["trash"]
    assert client.get("/api/messages/counts/", {"folder": "x"}).status_code == 400
    client.logout()
    assert client.get("/api/folders/").status_code == 401


@pytest.mark.django_db
def test_the_favicon_answers_instead_of_a_404(client):
    response = client.get("/favicon.ico", follow=True)
    assert response.status_code == 200
    assert b"<svg" in b"".join(response.streaming_content if response.streaming else [response.content])


# --- Contrast: the theme's text colours against their backgrounds, light and dark (WCAG 2.x) ---

def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def theme(dark: bool) -> dict[str, str]:
    text = CSS.read_text()
    light_block = re.search(r":root\s*\{(.*?)\}", text, re.S).group(1)
    values = dict(re.findall(r"--([\w-]+):\s*(#[0-9a-fA-F]{6})", light_block))
    if dark:
        dark_block = re.search(r"prefers-color-scheme:\s*dark\)\s*\{\s*:root\s*\{(.*?)\}", text, re.S).group(1)
        values.update(re.findall(r"--([\w-]+):\s*(#[0-9a-fA-F]{6})", dark_block))
    return values


# (foreground, background): every pair the pages draw text with.
TEXT_PAIRS = [("text", "surface"), ("text", "bg"), ("muted", "surface"), ("muted", "bg"), ("accent", "surface"),
              ("on-accent", "accent"), ("header-text", "header-bg"), ("text", "selected"), ("muted", "selected"),
              ("text", "hover"), ("muted", "hover"), ("star", "surface"), ("star", "selected"),
              ("on-danger", "danger"), ("text", "mark"), ("text", "warn-bg")]


def test_a_known_pair_computes_to_the_published_ratio():
    assert round(contrast("#000000", "#ffffff"), 1) == 21.0
    assert round(contrast("#777777", "#ffffff"), 2) == 4.48  # the snippet grey the issue measured


@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
def test_every_text_colour_of_the_theme_meets_wcag_aa(dark):
    colours = theme(dark)
    failing = {f"{fg} on {bg}": round(contrast(colours[fg], colours[bg]), 2) for fg, bg in TEXT_PAIRS
               if contrast(colours[fg], colours[bg]) < 4.5}
    assert not failing, failing
    # Focus rings and the current-row bar are not text: 3:1 against the surface (WCAG 1.4.11).
    assert contrast(colours["current"], colours["surface"]) >= 3


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/admin/pipeline/route/add/", "/admin/pipeline/subscriber/add/",
                                  "/admin/outgoing/service/add/"])
def test_the_admin_preselects_the_owner_and_says_mailgate(client, admin_user, path):
    client.force_login(admin_user)
    response = client.get(path)
    assert response.status_code == 200
    page = response.content.decode()
    assert re.search(rf'<option value="{admin_user.pk}" selected>', page), "owner not preselected"
    assert "mailgate administration" in page and "Django administration" not in page
