"""Every file of the shared real-world corpus survives APPEND + sync byte for byte, once."""

import hashlib
import imaplib
from pathlib import Path

import pytest
from django.core.files.storage import default_storage

from imap.models import MessageLocation
from pipeline.models import Message
from tests.builders import dovecot_account, sync

CORPUS = Path("/work/shared/corpus/eml")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.slow
@pytest.mark.skipif(not CORPUS.is_dir(), reason="shared corpus not present")
@pytest.mark.django_db
def test_every_corpus_file_is_stored_once_with_the_bytes_the_server_holds(alice, dovecot, mail_user):
    files = sorted(CORPUS.glob("*.eml"))
    assert len(files) == 446
    conn = dovecot.imap(mail_user.name)
    try:
        uid_of = {}
        for path in files:
            typ, data = conn.append("INBOX", None, None, path.read_bytes())
            assert typ == "OK", (path, data)
            uid_of[path.name] = int(data[0].split(b"APPENDUID ")[1].split()[1].rstrip(b"]"))
        conn.select("INBOX", readonly=True)
        typ, data = conn.uid("FETCH", "1:*", "(UID BODY.PEEK[])")
        server = {int(item[0].split(b"UID ")[1].split()[0]): item[1] for item in data if isinstance(item, tuple)}
    finally:
        conn.logout()
    account = dovecot_account(alice, dovecot, mail_user)
    sync(account)

    # A client must send CRLF line ends, so imaplib rewrites bare LF (260 corpus files) on APPEND
    # and the server holds - and gives back - the CRLF form: that is what "the raw message" is once
    # it has been in a mailbox, so stored bytes are compared with what a plain FETCH returns, and
    # that with the file after the same rewrite.
    stored = {loc.uid: loc.message for loc in MessageLocation.objects.filter(account=account).select_related("message")}
    assert len(stored) == 446
    for path in files:
        raw = path.read_bytes()
        uid = uid_of[path.name]
        expected = imaplib.MapCRLF.sub(b"\r\n", raw)
        if b"\0" in raw:
            # RFC 3501 4.3 forbids NUL in a literal; Dovecot replaces each NUL it is given (one
            # corpus file has UTF-16 text). Every other byte must be as sent.
            assert len(server[uid]) == len(expected), path.name
            assert all(s == e for s, e in zip(server[uid], expected) if e != 0), path.name
        else:
            assert sha(server[uid]) == sha(expected), path.name
        message = stored[uid]
        assert message.status == Message.Status.RECEIVED, path.name
        with default_storage.open(message.raw.name, "rb") as fh:
            assert sha(fh.read()) == message.raw_sha256 == sha(server[uid]), path.name
        if b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b""):
            assert message.raw_sha256 == sha(raw), path.name  # CRLF files are stored untouched

    # 446 files, 443 distinct messages: three pairs are the same message twice (attachment_pdf.eml
    # and attachment_pdf_lf.eml differ only in line ends; basic_email.eml is in two directories),
    # byte-identical on the server, so each pair is one Message with two locations. Everything
    # else, including the 59 files that share a header block with another file, is its own Message.
    distinct_contents = {sha(body) for body in server.values()}
    assert len(distinct_contents) == 443
    assert Message.objects.filter(account=account).count() == 443
    assert set(Message.objects.filter(account=account).values_list("raw_sha256", flat=True)) == distinct_contents
