"""Keys for putting a message into a conversation thread."""

import re

# Reply and forward markers in the languages mailgate's users write in, with optional counters
# ("Re[2]:", "AW(3):") and the full-width colon that CJK mailers use; and "[list]" tags.
_PREFIX = re.compile(
    r"^\s*(?:\[[^\]]{0,100}\]|(?:re|fwd?|aw|sv|wg|vs|antw|tr|rif|odp|res|enc)\s*(?:\[\d+\]|\(\d+\))?\s*[:：])",
    re.IGNORECASE,
)


def normalize_subject(subject) -> str:
    """Subject with every leading Re:/Fwd:/AW:/SV:/[list] marker removed, whitespace collapsed,
    casefolded: replies and forwards of one conversation share it."""
    text = subject or ""
    while True:
        stripped = _PREFIX.sub("", text, count=1)
        if stripped == text:
            break
        text = stripped
    return " ".join(text.split()).casefold()


def thread_candidates(parsed) -> list[str]:
    """Message-IDs this message answers, oldest first and the direct parent (In-Reply-To) last."""
    ids = [*parsed.references, parsed.in_reply_to]
    own = parsed.message_id
    # Keep each id at its last position, so In-Reply-To stays newest even if References has it.
    latest = {message_id: position for position, message_id in enumerate(ids) if message_id and message_id != own}
    return sorted(latest, key=latest.get)
