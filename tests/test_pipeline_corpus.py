"""The whole shared corpus (/work/shared/corpus/eml) through ingest and standardize."""

import email
import email.policy
import re
from pathlib import Path

import pytest

from pipeline import parsing, tasks
from pipeline.ingest import ingest_raw
from pipeline.models import Message

CORPUS = Path("/work/shared/corpus/eml")
pytestmark = [pytest.mark.django_db, pytest.mark.slow,
              pytest.mark.skipif(not CORPUS.is_dir(), reason="shared corpus not present")]


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text or "").strip()


def stdlib_subject_and_sender(raw: bytes):
    """What the stdlib decodes, or None where it fails (then parse_message's fallbacks decide)."""
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        subject = msg["subject"]
        sender = msg["from"]
        address = sender.addresses[0].addr_spec if sender is not None and sender.addresses else ""
        # U+FFFD means the stdlib gave up on raw 8-bit header bytes; parse_message guesses better.
        if "\ufffd" in str(subject or "") or msg.defects or (sender is not None and sender.defects) or (subject is not None and subject.defects):
            return None
        return _squash(str(subject or "")), address.lower()
    except Exception:
        return None


def test_every_corpus_file_standardizes_once_and_decodes_like_the_stdlib(alice):
    files = sorted(CORPUS.glob("*.eml"))
    assert len(files) > 400
    mismatches, crashes = [], []
    for path in files:
        raw = path.read_bytes()
        message, created = ingest_raw(owner=alice, raw=raw, identity=path.name, source="import")
        assert created
        before = parsing.crash_count()
        assert tasks.standardize(str(message.pk)) in ("standardized", "suppressed"), path.name
        if parsing.crash_count() != before:
            crashes.append(path.name)
        message.refresh_from_db()
        expected = stdlib_subject_and_sender(raw)
        if expected is not None and (_squash(message.subject), message.sender_address.lower()) != expected:
            mismatches.append((path.name, (_squash(message.subject), message.sender_address), expected))
    assert Message.objects.filter(owner=alice).count() == len(files)
    assert not Message.objects.filter(owner=alice, status=Message.Status.RECEIVED).exists()
    assert mismatches == []
    assert crashes == [], "these files reached parse_message's crash boundary"
