"""What a message's vectors are made of: its subject and its own words.

Quoted replies and signatures are cut before embedding: a reply quoting a whole invoice would
otherwise sit next to the invoice, and every mail of one sender next to each other because of
the same signature. Plain text only (the standardized text_body; HTML was already turned to
text by standardize).
"""

import re

CHUNK_WORDS = 200  # a few hundred words: WordLlama averages tokens, so long chunks blur
MAX_CHUNKS = 8  # a 50-page newsletter is found by its first pages; bounds the cost of one message

# A line that starts what follows as quoted or forwarded material, up to the end of the text.
_QUOTE_HEADER = re.compile(
    r"^(?:On .{0,200}wrote:\s*$"  # Gmail, Apple Mail, Thunderbird
    r"|Am .{0,200}schrieb.{0,100}:\s*$|Le .{0,200}a écrit\s*:\s*$"
    r"|-{2,}\s*(?:Original Message|Forwarded message|Ursprüngliche Nachricht)\s*-{2,}"
    r"|_{10,}\s*$"  # Outlook's rule above its From:/Sent: block
    r"|From: .+\n(?:Sent|Date): .+)",  # Outlook without the rule
    re.MULTILINE | re.IGNORECASE)
# RFC 3676's "-- " line, and the bare "--" many clients write, start a signature.
_SIGNATURE = re.compile(r"^--[ \t]?$", re.MULTILINE)
_MOBILE = re.compile(r"^(?:Sent from my .{1,40}|Get Outlook for .{1,40})$", re.MULTILINE | re.IGNORECASE)
_WORDS = re.compile(r"\S+")


def own_text(body: str) -> str:
    """`body` without quoted replies (">" lines, "On … wrote:" and what follows), forwarded or
    original-message blocks and the signature. Never empty when the body had words of its own
    before the quote; a body that is only a quote (a bare forward) keeps the quoted text, since
    that is all the message says."""
    text = (body or "").replace("\r\n", "\n")
    cut = _QUOTE_HEADER.search(text)
    own = text[:cut.start()] if cut else text
    signature = _SIGNATURE.search(own)
    if signature:
        own = own[:signature.start()]
    own = _MOBILE.sub("", own)
    own = "\n".join(line for line in own.split("\n") if not line.lstrip().startswith(">"))
    if own.strip():
        return own.strip()
    # Nothing of its own: a forward. Its content is what the message is about.
    return "\n".join(line.lstrip("> ") for line in text.split("\n")).strip()


def chunks(subject: str, body: str) -> list[str]:
    """The texts to embed for one message: the subject starts the first chunk (it says the most
    per word), then the own text in CHUNK_WORDS pieces, at most MAX_CHUNKS. A message with neither
    subject nor text has no chunks."""
    words = _WORDS.findall(own_text(body))
    subject = (subject or "").strip()[:500]
    pieces = []
    for start in range(0, min(len(words), CHUNK_WORDS * MAX_CHUNKS), CHUNK_WORDS):
        pieces.append(" ".join(words[start:start + CHUNK_WORDS]))
    if not pieces:
        return [subject] if subject else []
    if subject:
        pieces[0] = f"{subject}\n{pieces[0]}"
    return pieces
