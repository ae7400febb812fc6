"""Unit tests for the pieces of sync that need no server: folder names, identity, order, parsing."""

import pytest

from imap import errors, folders, identity, utf7, wire
from imap.connection import throttle_from_text
from imap.headers import header_fields
from imap.wire import uid_set


# --- modified UTF-7 -----------------------------------------------------------------------------

@pytest.mark.parametrize("name, wire_name", [
    ("INBOX", "INBOX"),
    ("Tom & Jerry", "Tom &- Jerry"),
    ("Entwürfe", "Entw&APw-rfe"),
    ("台北", "&U,BTFw-"),  # RFC 3501's own example
    ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
    ("Отправленные", "&BB4EQgQ,BEAEMAQyBDsENQQ9BD0ESwQ1-"),
])
def test_names_encode_as_rfc_3501_says(name, wire_name):
    assert utf7.encode(name) == wire_name
    assert utf7.decode(wire_name) == name


@pytest.mark.parametrize("name", ["R&D", "&", "&&-&", "Ünïcødé & 📬 mail", "📬", "a📬b&c日本", "Ω&Ω", ""])
def test_any_name_round_trips(name):
    assert utf7.decode(utf7.encode(name)) == name
    assert utf7.encode(name).isascii()


def test_an_emoji_is_a_surrogate_pair_on_the_wire():
    assert utf7.encode("📬") == "&2D3c7A-"  # U+1F4EC = D83D DCEC


def test_decode_accepts_bytes():
    assert utf7.decode(b"Entw&APw-rfe") == "Entwürfe"


@pytest.mark.parametrize("bad", ["&abc", "&$$$-", "&A-"])
def test_malformed_names_are_rejected_not_guessed(bad):
    with pytest.raises(utf7.Utf7Error):
        utf7.decode(bad)


def test_quote_escapes_quotes_and_backslashes():
    assert utf7.quote('a"b\\c') == '"a\\"b\\\\c"'


# --- identity -----------------------------------------------------------------------------------

HEAD = b"From: a@example.test\r\nMessage-ID: <one@example.test>\r\nSubject: hi\r\n"


def test_message_id_identity_includes_a_header_digest():
    ident = identity.identity_of_raw(HEAD + b"\r\nbody\r\n")
    assert ident.startswith("mid:one@example.test:")
    assert len(ident.split(":")[-1]) == 16


def test_what_phase_1_fetches_gives_the_identity_of_the_whole_message():
    raw = HEAD + b"\r\nbody\r\n"
    assert identity.identity(HEAD + b"\r\n", size=len(raw), body_prefix=b"body\r\n") == \
        identity.identity_of_raw(raw)


def test_same_headers_with_different_bodies_are_different_messages():
    assert identity.identity_of_raw(HEAD + b"\r\nhtml") != identity.identity_of_raw(HEAD + b"\r\ntext")


def test_bare_lf_and_crlf_give_the_same_identity():
    assert identity.identity_of_raw(HEAD.replace(b"\r\n", b"\n") + b"\nbody\n") == identity.identity_of_raw(HEAD + b"\r\nbody\r\n")


def test_two_messages_reusing_a_message_id_are_not_merged():
    other = HEAD.replace(b"Subject: hi", b"Subject: something else")
    assert identity.identity_of_raw(HEAD + b"\r\nx") != identity.identity_of_raw(other + b"\r\nx")


def test_a_message_without_message_id_is_identified_by_its_headers():
    ident = identity.identity_of_raw(b"From: a@example.test\r\nSubject: x\r\n\r\nbody")
    assert ident.startswith("hdr:") and len(ident) == 4 + 64


def test_gmail_identity_is_the_gm_msgid():
    assert identity.identity_of_raw(HEAD, gm_msgid=1278455344230334865) == "gm:1278455344230334865"


def test_folded_message_id_is_unfolded():
    assert identity.message_id(b"Message-ID:\r\n <folded@example.test>\r\n\r\n") == "folded@example.test"


def test_a_huge_message_id_still_fits_the_column():
    ident = identity.identity_of_raw(b"Message-ID: <" + b"x" * 2000 + b"@example.test>\r\n\r\n")
    assert len(ident) <= identity.MAX_IDENTITY


# --- folders ------------------------------------------------------------------------------------

LIST_DATA = [
    b'(\\HasNoChildren \\Trash) "/" Trash',
    b'(\\HasNoChildren) "/" Zebra',
    b'(\\HasChildren \\Noselect) "/" Lists',
    b'(\\HasNoChildren) "/" "Lists/django"',
    b'(\\HasNoChildren \\Sent) "/" Sent',
    b'(\\NonExistent) "/" Ghost',
    b'(\\HasNoChildren) "/" "Entw&APw-rfe"',
    b'(\\HasNoChildren \\Drafts) "/" Drafts',
    b'(\\HasNoChildren) "/" Archive',
    (b'(\\HasNoChildren) "/" {5}', b'Tom&-'),
    b'',
    b'(\\HasNoChildren) "/" INBOX',
]


def test_folders_come_inbox_first_then_special_use_then_by_name():
    chosen = folders.choose(folders.parse_list(LIST_DATA))
    assert [f.name for f in chosen] == ["INBOX", "Sent", "Drafts", "Trash", "Archive", "Entwürfe",
                                        "Lists/django", "Tom&", "Zebra"]


def test_noselect_and_nonexistent_folders_are_skipped():
    names = {f.name for f in folders.choose(folders.parse_list(LIST_DATA))}
    assert "Lists" not in names and "Ghost" not in names


def test_include_and_exclude_lists_take_names_and_patterns():
    infos = folders.parse_list(LIST_DATA)
    assert [f.name for f in folders.choose(infos, include=["inbox", "Lists/*"])] == ["INBOX", "Lists/django"]
    assert "Trash" not in {f.name for f in folders.choose(infos, exclude=["Trash", "Z*"])}
    assert "Zebra" not in {f.name for f in folders.choose(infos, exclude=["Trash", "Z*"])}


def test_special_use_attribute_is_recorded():
    by_name = {f.name: f for f in folders.parse_list(LIST_DATA)}
    assert by_name["Sent"].special_use == "\\Sent"
    assert by_name["Zebra"].special_use == ""


# --- throttling ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [
    ("[THROTTLED] Too many commands", None),
    ("Too many simultaneous connections. (Failure)", None),
    ("Account is temporarily unavailable. Suggested Backoff Time: 234 ms", 0.234),
    ("[UNAVAILABLE] Suggested backoff time: 30 seconds", 30),
])
def test_throttling_replies_are_recognised(text, seconds):
    exc = throttle_from_text(text)
    assert isinstance(exc, errors.Throttled)
    assert exc.backoff_seconds == (pytest.approx(seconds) if seconds is not None else None)


def test_an_ordinary_no_is_not_throttling():
    assert throttle_from_text("[AUTHENTICATIONFAILED] Authentication failed.") is None


# --- FETCH parsing and helpers -------------------------------------------------------------------

def test_fetch_responses_parse_in_any_item_order_with_literals():
    data = [
        (b'1 (UID 7 FLAGS (\\Seen $Label) BODY[HEADER] {12}', b"Subject: x\r\n"),
        b' X-GM-LABELS ("\\\\Inbox" "My &AOk-t&AOk-") RFC822.SIZE 42)',
        b'2 (FLAGS () UID 8)',
        (b'3 (UID 9 BODY[] {3}', b"abc"),
        b')',
    ]
    items = wire.fetch_items(data)
    assert [i["UID"] for i in items] == ["7", "8", "9"]
    assert items[0]["FLAGS"] == ["\\Seen", "$Label"]
    assert items[0]["BODY[HEADER]"] == b"Subject: x\r\n"
    assert items[0]["X-GM-LABELS"] == ["\\Inbox", "My &AOk-t&AOk-"]
    assert items[0]["RFC822.SIZE"] == "42"
    assert items[1]["FLAGS"] == []
    assert items[2]["BODY[]"] == b"abc"


def test_uid_sets_are_compact():
    assert uid_set([9, 1, 2, 3, 7, 10]) == "1:3,7,9:10"
    assert uid_set([5]) == "5"


def test_a_servers_uid_set_is_expanded_only_up_to_the_uids_we_sent():
    assert wire.expand_uid_set("1:3,7", limit=4) == [1, 2, 3, 7]
    assert wire.expand_uid_set("9:7", limit=3) == [7, 8, 9]
    # A hostile or broken server's COPYUID would otherwise be a list of four billion ints.
    for hostile in ("1:4294967295", "1:3,7", "1,2,3,4,5", "1:2,4294967295:1"):
        with pytest.raises(ValueError, match="more than 3 UIDs"):
            wire.expand_uid_set(hostile, limit=3)


def test_a_copyuid_answer_naming_more_uids_than_were_moved_is_ignored():
    from types import SimpleNamespace

    from imap.writeback import _copyuid

    def mailbox(answer: bytes):
        return SimpleNamespace(client=SimpleNamespace(untagged_responses={"COPYUID": [answer]}))

    assert _copyuid(mailbox(b"7 1:4294967295 1:4294967295"), 2) is None
    assert _copyuid(mailbox(b"7 4,9 20:21"), 2) == (7, {4: 20, 9: 21})


def test_header_fields_decode_encoded_words_and_addresses():
    fields = header_fields(b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.test>\r\n"
                           b"To: a@example.test, \"B, b\" <b@example.test>\r\n"
                           b"Subject: =?utf-8?b?SGVsbG8g8J+TrA==?=\r\nDate: Tue, 1 Jul 2025 10:00:00 +0200\r\n"
                           b"Message-ID: <m@example.test>\r\n\r\n")
    assert fields["sender_name"] == "Jürgen" and fields["sender_address"] == "j@example.test"
    assert [t["address"] for t in fields["to"]] == ["a@example.test", "b@example.test"]
    assert fields["subject"] == "Hello 📬"
    assert fields["date"].isoformat() == "2025-07-01T10:00:00+02:00"
    assert fields["message_id"] == "<m@example.test>"


def test_a_broken_date_header_gives_no_date_not_an_error():
    assert header_fields(b"Date: yesterday-ish\r\n\r\n")["date"] is None
