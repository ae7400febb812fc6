"""Formatting, splitting, SMS encoding, signatures and per-kind validation: plain functions."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from outgoing import formatting, signatures
from outgoing.formatting import split_runs, utf16_len
from outgoing.registry import transport_class
from outgoing.transports.twilio import gsm_normalize, sms_segments
from tests.builders import TWILIO_PARAMS, TWILIO_SIGNATURE

VALUES = {"sender": "Bob Example", "sender_name": "Bob Example", "sender_address": "bob@example.test",
          "source": "Work", "subject": "Lunch?", "text": "Meet at 12.30 (usual place)!", "snippet": "",
          "date": ""}


# ------------------------------------------------------------------ templates


def test_the_default_chat_template_puts_the_sender_in_bold_then_the_subject_and_text():
    runs = formatting.runs(formatting.CHAT_TEMPLATE, VALUES)
    assert runs == [("Bob Example via Work:", True), ("\nLunch?\n\nMeet at 12.30 (usual place)!", False)]


def test_telegram_escapes_every_markdownv2_special_character_and_bolds_with_single_stars():
    rendered = formatting.render_telegram(formatting.runs(formatting.CHAT_TEMPLATE, VALUES))
    assert rendered == "*Bob Example via Work:*\nLunch?\n\nMeet at 12\\.30 \\(usual place\\)\\!"
    assert formatting.telegram_escape("_*[]()~`>#+-=|{}.!\\") == "".join("\\" + c for c in "_*[]()~`>#+-=|{}.!\\")


def test_discord_keeps_double_star_bold_and_escapes_markdown_in_the_mail_text():
    values = {**VALUES, "text": "2*3 = 6 and _not_ markdown"}
    rendered = formatting.render_discord(formatting.runs(formatting.CHAT_TEMPLATE, values))
    assert rendered.startswith("**Bob Example via Work:**\n")
    assert rendered.endswith("2\\*3 = 6 and \\_not\\_ markdown")


def test_slack_escapes_its_three_control_characters():
    values = {**VALUES, "text": "a <b> & c"}
    assert formatting.render_slack(formatting.runs(formatting.CHAT_TEMPLATE, values)).endswith("a &lt;b&gt; &amp; c")


def test_an_empty_subject_leaves_no_run_of_blank_lines():
    runs = formatting.runs(formatting.CHAT_TEMPLATE, {**VALUES, "subject": ""})
    assert formatting.plain(runs) == "Bob Example via Work:\n\nMeet at 12.30 (usual place)!"


def test_templates_are_checked_for_unknown_fields_attribute_access_and_bad_braces():
    assert formatting.template_error("**{sender}:** {text}") is None
    assert "unknown field {nope}" in formatting.template_error("{nope}")
    assert "unknown field" in formatting.template_error("{text.__class__}")
    assert formatting.template_error("{text") is not None
    assert formatting.template_error("") == "must be a non-empty string"


def test_format_spec_widths_are_bounded_when_a_template_is_checked():
    import tracemalloc

    assert formatting.template_error("{sender:>20} {subject:.80}") is None
    tracemalloc.start()
    try:
        # Without the bound this allocates 100 MB (and 300 MB for the reviewer's example).
        problem = formatting.template_error("{text:>100000000}")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert problem == f"a format width or precision above {formatting.MAX_FORMAT_WIDTH}"
    assert peak < 1_000_000
    assert formatting.template_error("{subject:.1001}") is not None
    assert formatting.template_error("{text:>" + "9" * 5000 + "}") is not None
    # A width taken from the message itself could not be checked here at all.
    assert formatting.template_error("{text:>{sender}}") == "a format spec cannot contain another field"
    with pytest.raises(ValidationError, match="config.template: a format width"):
        transport_class("slack").validate({"webhook_url": "https://hooks.slack.com/services/x",
                                           "template": "{text:>300000000}"}, {})


def test_a_stored_template_with_a_huge_width_fails_the_send_for_good_without_allocating_it():
    from outgoing.errors import TransportError

    with pytest.raises(TransportError) as failed:
        formatting.runs("**{sender}** {text:>300000000}", VALUES)
    assert failed.value.permanent
    assert failed.value.message == f"config.template: a format width or precision above {formatting.MAX_FORMAT_WIDTH}"


# ------------------------------------------------------------------ splitting


def test_a_long_text_is_split_at_line_breaks_within_the_limit():
    text = "\n".join(f"line {i:03d} " + "x" * 40 for i in range(100))
    pieces = split_runs([(text, False)], limit=1000, measure=lambda r: len(r[0]), max_parts=20)
    assert all(len(formatting.plain(p)) <= 1000 for p in pieces)
    assert all(formatting.plain(p).endswith("x") for p in pieces)  # never cut inside a line
    assert "\n".join(formatting.plain(p) for p in pieces) == text


def test_splitting_never_leaves_a_bold_span_open_or_an_escape_cut():
    runs = [("B" * 30, True), (" plain. text! " * 10, False)]
    for piece in split_runs(runs, limit=25, measure=lambda r: len(r[0]), max_parts=50):
        rendered = formatting.render_telegram(piece)
        assert rendered.count("*") % 2 == 0
        assert not rendered.endswith("\\")


def test_past_max_parts_the_last_part_says_how_much_was_left_out():
    pieces = split_runs([("word " * 1000, False)], limit=300, measure=lambda r: len(r[0]), max_parts=2)
    assert len(pieces) == 2
    last = formatting.plain(pieces[-1])
    assert len(last) <= 300
    sent, note = last.split("\n[truncated: ")
    left_out = int(note.removesuffix(" more characters]"))
    shown = len(formatting.plain(pieces[0])) + len(sent)
    assert 5000 - shown - 4 <= left_out <= 5000 - shown  # give or take the spaces at the cuts


def test_telegram_counts_utf16_units_so_emoji_count_twice():
    assert utf16_len("a😀") == 3


# ------------------------------------------------------------------ SMS encoding


def test_gsm7_sms_takes_160_characters_in_one_segment_and_153_per_segment_after():
    assert sms_segments("a" * 160) == ("GSM-7", 1)
    assert sms_segments("a" * 161) == ("GSM-7", 2)
    assert sms_segments("a" * 306) == ("GSM-7", 2)
    assert sms_segments("a" * 307) == ("GSM-7", 3)


def test_extended_gsm_characters_cost_two_septets():
    assert sms_segments("€" * 80) == ("GSM-7", 1)
    assert sms_segments("€" * 81) == ("GSM-7", 2)


def test_one_character_outside_gsm7_makes_it_ucs2_with_70_per_segment():
    assert sms_segments("a" * 69 + "ł") == ("UCS-2", 1)
    assert sms_segments("a" * 70 + "ł") == ("UCS-2", 2)
    assert sms_segments("😀" * 35) == ("UCS-2", 1)  # two UTF-16 units each


def test_mail_typography_is_folded_back_into_gsm7():
    text = gsm_normalize("It\u2019s\xa0\u201cdone\u201d \u2013 really\u2026")
    assert text == 'It\'s "done" - really...'
    assert sms_segments(text)[0] == "GSM-7"


# ------------------------------------------------------------------ signatures

TWILIO_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"


def test_twilios_documented_example_signature_matches():
    assert signatures.twilio_signature(TWILIO_URL, TWILIO_PARAMS.items(), "12345") == TWILIO_SIGNATURE
    assert signatures.twilio_valid(TWILIO_URL, TWILIO_PARAMS.items(), TWILIO_SIGNATURE, ["12345"])


@pytest.mark.parametrize("change", ["url", "param", "token", "signature", "extra param"])
def test_changing_any_part_of_twilios_example_breaks_the_signature(change):
    url, params, token, signature = TWILIO_URL, dict(TWILIO_PARAMS), "12345", TWILIO_SIGNATURE
    if change == "url":
        url = url.replace("foo=1", "foo=2")
    elif change == "param":
        params["Digits"] = "1235"
    elif change == "token":
        token = "12346"
    elif change == "signature":
        signature = signature.replace("0", "1", 1)
    else:
        params["Extra"] = ""
    assert not signatures.twilio_valid(url, params.items(), signature, [token])


def test_a_rotated_twilio_token_still_validates_with_the_previous_one():
    assert signatures.twilio_valid(TWILIO_URL, TWILIO_PARAMS.items(), TWILIO_SIGNATURE, ["new-token", "12345"])


def test_signed_json_needs_a_fresh_timestamp_and_any_current_secret():
    body = b'{"text": "hi"}'
    signature = signatures.sign("s3cret", "1700000000", body)
    assert signatures.signed_json_valid(["s3cret"], "1700000000", body, signature, now=1700000000 + 300)
    assert signatures.signed_json_valid(["new", "s3cret"], "1700000000", body, signature, now=1700000000)
    assert signatures.signed_json_valid(["s3cret"], "1700000000", body, "sha256=" + signature, now=1700000000)
    assert not signatures.signed_json_valid(["s3cret"], "1700000000", body, signature, now=1700000000 + 301)
    assert not signatures.signed_json_valid(["s3cret"], "1700000000", body, signature, now=1700000000 - 301)
    assert not signatures.signed_json_valid(["other"], "1700000000", body, signature, now=1700000000)
    assert not signatures.signed_json_valid(["s3cret"], "1700000000", body + b" ", signature, now=1700000000)
    assert not signatures.signed_json_valid(["s3cret"], "１７", body, signature)  # non-ASCII digits


# ------------------------------------------------------------------ validation per kind


def errors_of(kind, config, secrets=None) -> dict:
    with pytest.raises(ValidationError) as caught:
        transport_class(kind).validate(config, secrets or {})
    return caught.value.message_dict


def test_each_kind_names_the_missing_field():
    assert errors_of("telegram", {}) == {"bot_token": ["secrets.bot_token: required for telegram"]}
    assert "config.host: required for smtp" in errors_of("smtp", {"from_address": "a@b.test"})["config"]
    assert "config.account_sid: required for twilio" in errors_of("twilio", {}, {"auth_token": "x"})["config"]
    assert errors_of("discord", {}) == {"webhook_url": ["secrets.webhook_url: required for discord"]}


def test_malformed_values_are_named_with_what_is_expected():
    smtp = errors_of("smtp", {"host": "mx", "from_address": "nope", "port": 70000, "security": "tls"})["config"]
    assert "config.security: one of ssl, starttls, none" in smtp
    assert "config.port: a port number from 1 to 65535" in smtp
    assert "config.from_address: not an email address" in smtp
    twilio = errors_of("twilio", {"account_sid": "AC1", "from_number": "555"}, {"auth_token": "x"})["config"]
    assert "config.account_sid: AC followed by 32 hex digits" in twilio
    assert any(m.startswith("config.from_number: a phone number in E.164") for m in twilio)
    telegram = errors_of("telegram", {"chatid": 1, "template": "{who}"}, {"bot_token": "1:A"})["config"]
    assert any(m.startswith("config.chatid: unknown key for telegram") for m in telegram)
    assert any(m.startswith("config.template: unknown field {who}") for m in telegram)


def test_plain_http_api_bases_are_only_allowed_to_loopback():
    config = {"api_base": "http://api.example.test"}
    assert errors_of("telegram", config, {"bot_token": "1:A"}) == {
        "config": ["config.api_base: plain http is only allowed to a loopback host; use https"]}
    transport_class("telegram").validate({"api_base": "http://127.0.0.1:9"}, {"bot_token": "1:A"})


def test_a_password_is_never_sent_in_clear_text_to_a_remote_smtp_server():
    config = {"host": "smtp.example.test", "from_address": "relay@example.test", "security": "none",
              "username": "relay"}
    assert "config.security: a password is only sent unencrypted to a loopback host" in \
        errors_of("smtp", config, {"password": "pw"})["config"]
