"""Messages per second of parse_message against the bare stdlib, over the whole corpus.

    .venv/bin/python bench/parse.py [--rounds 3] [--corpus ../shared/corpus/eml]

The baseline is what any code must do at least: email.message_from_bytes with policy.default,
then get_body() and get_content() on the body it picks.
"""

import argparse
import os
import sys
import time
from email import message_from_bytes, policy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.parsing import Limits, parse_message  # noqa: E402


def default_corpus():
    configured = os.environ.get("MAILGATE_CORPUS")
    if configured:
        path = Path(configured)
        return path / "eml" if (path / "eml").is_dir() else path
    return ROOT.parent / "shared" / "corpus" / "eml"


def stdlib(raw):
    body = message_from_bytes(raw, policy=policy.default).get_body(("plain", "html"))
    if body is not None:
        try:
            body.get_content()
        except (LookupError, ValueError, AttributeError):  # unknown charsets and the like
            pass


def rate(function, messages, rounds):
    """(messages per second, (seconds, name) of the slowest single message)."""
    slowest = (0.0, "")
    started = time.perf_counter()
    for _ in range(rounds):
        for name, raw in messages:
            begin = time.perf_counter()
            function(raw)
            slowest = max(slowest, (time.perf_counter() - begin, name))
    return len(messages) * rounds / (time.perf_counter() - started), slowest


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--corpus", type=Path, default=default_corpus())
    args = parser.parse_args()
    messages = [(p.name, p.read_bytes()) for p in sorted(args.corpus.glob("*.eml"))]
    if not messages:
        sys.exit(f"no .eml files in {args.corpus}")
    parse_message(b"Content-Type: text/html\r\n\r\n<p>warm-up</p>")  # starts the html2text worker
    no_html2text = Limits(html_to_text_seconds=0)
    runs = [
        ("stdlib parse + get_body", stdlib),
        ("parse_message", parse_message),
        ("parse_message, html2text off", lambda raw: parse_message(raw, no_html2text)),
    ]
    print(f"{len(messages)} messages, {sum(len(r) for _, r in messages) / 1e6:.1f} MB, {args.rounds} rounds")
    results = {}
    for label, function in runs:
        results[label], slowest = rate(function, messages, args.rounds)
        print(f"{label:30s} {results[label]:8.0f} msg/s   slowest {slowest[0] * 1000:6.0f} ms  {slowest[1]}")
    ratio = results["parse_message"] / results["stdlib parse + get_body"]
    print(f"parse_message runs at {ratio:.2f}x the stdlib baseline's speed")


if __name__ == "__main__":
    main()
