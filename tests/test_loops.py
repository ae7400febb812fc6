"""Loop prevention (pipeline/loops.py): what is never relayed, and what still is."""

import pytest
from django.test import override_settings

from outgoing.relay import relay_header_value
from pipeline.loops import list_id_key, list_ids_for_addresses, suppression_reason


def reason(headers=None, **kwargs):
    return suppression_reason(headers or {}, **kwargs)


def test_ordinary_mail_is_relayed():
    assert reason({"list-id": "", "precedence": "list", "auto-submitted": "no"},
                  content_type="multipart/alternative; boundary=x", sender_address="alice@example.test") == ""


@override_settings(MAILGATE_INSTANCE_ID="gate-1")
def test_mail_this_mailgate_relayed_is_suppressed():
    header = relay_header_value("1f0c")
    assert header == "gate-1;1f0c"
    assert "relayed by this mailgate" in reason({"x-mailgate-relay": header})


@override_settings(MAILGATE_INSTANCE_ID="gate-1")
def test_our_relay_mark_is_found_among_several_hops():
    assert reason({"x-mailgate-relay": "gate-2;aaa, gate-1;bbb"}).startswith("loop:")


@override_settings(MAILGATE_INSTANCE_ID="gate-1")
def test_another_instances_relay_mark_alone_does_not_suppress():
    assert reason({"x-mailgate-relay": "gate-2;aaa"}) == ""


@pytest.mark.parametrize("value", ["auto-replied", "auto-generated", "auto-notified; owner-email=x@y"])
def test_auto_submitted_other_than_no_is_suppressed(value):
    assert reason({"auto-submitted": value}).startswith("auto-reply")


def test_auto_submitted_no_is_relayed():
    assert reason({"auto-submitted": "No"}) == ""


def test_x_auto_response_suppress_marks_an_auto_reply():
    assert reason({"x-auto-response-suppress": "All"}).startswith("auto-reply")


@pytest.mark.parametrize("value", ["bulk", "junk", "auto_reply", "Bulk"])
def test_bulk_junk_and_auto_reply_precedence_are_suppressed(value):
    assert reason({"precedence": value}).startswith("auto-reply")


def test_list_precedence_is_relayed():
    assert reason({"precedence": "list"}) == ""


@pytest.mark.parametrize("value", ["<>", "", " <> "])
def test_an_empty_return_path_is_a_bounce(value):
    assert reason({"return-path": value}).startswith("bounce")


def test_an_absent_return_path_says_nothing():
    assert reason({}) == ""


@pytest.mark.parametrize("sender", ["MAILER-DAEMON@mx.example.test", "postmaster@example.test"])
def test_mail_from_the_mailer_daemon_is_a_bounce(sender):
    assert reason(sender_address=sender).startswith("bounce")


def test_a_delivery_status_report_is_a_bounce():
    found = reason(content_type='multipart/report; report-type="delivery-status"; boundary="b"')
    assert found == "bounce: multipart/report (delivery-status)"


def test_a_copy_of_a_list_we_relay_to_is_suppressed():
    ids = list_ids_for_addresses(["Team@Lists.Example.test", "+4915112345678", ""])
    assert ids == {"team.lists.example.test"}
    found = reason({"list-id": "The team <team.lists.example.test>"}, relayed_list_ids=ids)
    assert found.startswith("loop: List-Id team.lists.example.test")


def test_other_lists_are_relayed():
    assert reason({"list-id": "<python-dev.python.org>"}, relayed_list_ids={"team.lists.example.test"}) == ""


def test_list_id_key_reads_bare_and_bracketed_ids():
    assert list_id_key("Python <Python-Dev.python.org>") == "python-dev.python.org"
    assert list_id_key("bare.example.test") == "bare.example.test"
