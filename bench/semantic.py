"""Semantic search: quality (recall@10 of hybrid vs full-text alone) and speed, in-process.

    .venv/bin/python bench/semantic.py [--messages 100000] [--ann 1000000] [--runs 4]

Builds a throw-away database as bench/api.py does (PostgreSQL too when DATABASE_URL is set).

Quality: alice's mailbox holds the real-world corpus (/work/shared/corpus, through the real
ingest and standardize), 5,000 filler messages of bench/mailgen.py and 5 "needles" for each of 14
kinds; each labelled query (mailgen.QUERIES, written as a person would) should find the 5 needles
of its kind. recall@10 = needles in the first 10 results / 5, for mode=text (the full-text search
alone, as the API answers it) and mode=hybrid, through the API.

Speed at --messages: filler up to that many messages in one scope (the worst case: one index
holds them all), embedded with the pipeline step's own function (embed.reindex: read, chunk,
embed, write vectors), then p50/p95 of semantic and hybrid queries and of related messages
through the API, and the in-process index's memory per message.

ANN at --ann vectors: the 100k messages' real vectors, each repeated with small noise to reach
that count, in the HNSW index the app switches to above EXACT_LIMIT; build time, query p95
(query embedding + search) and its recall against exact search. The database side of a query at
that size is not measured here (see bench/api.py for full-text at 100k).
"""

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "bench"))  # after the project: bench/pipeline.py would hide the pipeline app
os.environ.setdefault("MAILGATE_DATA_DIR", tempfile.mkdtemp(prefix="mailgate-bench-"))
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
os.environ.setdefault("MAILGATE_LOG_LEVEL", "WARNING")  # not one line per queued task

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
from django.apps import apps  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402

import mailgen  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus" / "eml"
QUALITY_FILLER = 5000


def pct(samples, p):
    samples = sorted(samples)
    return samples[max(0, int(len(samples) * p) - 1)]


def store(owner, generated, start_index=0):
    """bulk_create messages as standardized imports (no account: one scope)."""
    from datetime import datetime, timedelta, timezone

    from pipeline.models import Message

    base = datetime(2024, 1, 1, tzinfo=timezone.utc)
    rows, ids = [], {}
    for n, item in enumerate(generated, start=start_index):
        message = Message(owner=owner, source="import", identity=f"gen-{n}", subject=item["subject"],
                          sender_name=item["sender_name"], sender_address=item["sender_address"],
                          text_body=item["body"], snippet=item["body"][:120], status="history",
                          arrival="history", date=base + timedelta(minutes=n), arrived_at=base + timedelta(minutes=n))
        rows.append(message)
        ids[message.pk.hex] = item["kind"]
        if len(rows) == 5000:
            Message.objects.bulk_create(rows)
            rows = []
    if rows:
        Message.objects.bulk_create(rows)
    return ids


def ingest_corpus(owner) -> int:
    from pipeline import tasks
    from pipeline.ingest import ingest_raw

    count = 0
    for path in sorted(CORPUS.glob("*.eml")):
        message, created = ingest_raw(owner=owner, raw=path.read_bytes(), identity=f"corpus-{path.name}",
                                      source="import")
        if created:
            tasks.standardize(str(message.pk))
            count += 1
    return count


def ids_of(client, query, mode, limit=10):
    response = client.get("/api/messages/", {"q": query, "mode": mode, "limit": limit})
    assert response.status_code == 200, response.content[:300]
    return [row["id"].replace("-", "") for row in response.json()["results"]]


def bm25_any(user, query):
    """A stronger word baseline than the product's full-text mode: any of the words, BM25 order."""
    from frontend import search, semantic_search

    words = search.terms(query)
    content = [w for w in words if w.lower() not in semantic_search.STOPWORDS] or words
    return semantic_search._text_ranking(user, content, every=False, limit=10)


def quality(client, user, kinds) -> None:
    needles = {}
    for ident, kind in kinds.items():
        needles.setdefault(kind, set()).add(ident)
    print(f"\n{'query':40} {'kind':18} {'text':>5} {'hybrid':>6} {'semantic':>8} {'bm25-any':>8}")
    totals = {e: {"text": [], "hybrid": [], "semantic": [], "bm25": []} for e in (False, True)}
    for kind, query, exact in mailgen.QUERIES:
        wanted = needles[kind]
        scores = {}
        for mode in ("text", "hybrid", "semantic"):
            scores[mode] = len(wanted & set(ids_of(client, query, mode))) / len(wanted)
            totals[exact][mode].append(scores[mode])
        scores["bm25"] = len(wanted & set(bm25_any(user, query))) / len(wanted)
        totals[exact]["bm25"].append(scores["bm25"])
        print(f"{query[:40]:40} {kind[:18]:18} {scores['text']:5.2f} {scores['hybrid']:6.2f} {scores['semantic']:8.2f}"
              f" {scores['bm25']:8.2f}"
              f"{'  (exact words)' if exact else ''}")
    for exact, label in ((False, "meaning queries"), (True, "exact-word queries")):
        t = {mode: statistics.mean(values) for mode, values in totals[exact].items()}
        print(f"recall@10, {label} ({len(totals[exact]['text'])}): full-text {t['text']:.3f}, hybrid {t['hybrid']:.3f} "
              f"({(t['hybrid'] - t['text']) * 100:+.1f} points), semantic alone {t['semantic']:.3f}, "
              f"any-word BM25 alone {t['bm25']:.3f}")
    every = {mode: statistics.mean(totals[False][mode] + totals[True][mode]) for mode in ("text", "hybrid")}
    print(f"recall@10, all {len(mailgen.QUERIES)} queries: full-text {every['text']:.3f}, hybrid {every['hybrid']:.3f} "
          f"({(every['hybrid'] - every['text']) * 100:+.1f} points)")
    exact_pairs = list(zip(totals[True]["text"], totals[True]["hybrid"]))
    below = sum(1 for text, hybrid in exact_pairs if hybrid < text)
    print(f"exact-word queries where hybrid < full-text: {below} of {len(exact_pairs)}")


CPU: list[float] = []  # CPU ms of this process per timed call (SQLite runs in it): robust to load


def timed(call, runs):
    samples = []
    for _ in range(runs):
        started, started_cpu = time.perf_counter(), time.process_time()
        call()
        samples.append((time.perf_counter() - started) * 1000)
        CPU.append((time.process_time() - started_cpu) * 1000)
    return samples


def speed(client, alice, total, runs) -> np.ndarray:
    from pipeline.models import Message
    from pipeline.semantic import embed, index
    from pipeline.semantic.models import MessageVector

    have = Message.objects.count()
    started = time.perf_counter()
    store(alice, mailgen.filler(total - have, seed=99), start_index=10_000_000)
    print(f"\nseeded {total - have:,} more messages ({Message.objects.count():,} in all) in "
          f"{time.perf_counter() - started:.1f} s")
    MessageVector.objects.all().delete()
    words = statistics.mean(len(b.split()) for b in Message.objects.values_list("text_body", flat=True)[:2000])
    started = time.perf_counter()
    count = embed.reindex()
    elapsed = time.perf_counter() - started
    vectors = MessageVector.objects.count()
    print(f"embed step (embed.reindex: read, chunk, embed, write; {words:.0f} words per message on average): "
          f"{count:,} messages, {vectors:,} vectors in {elapsed:.1f} s = {count / elapsed:,.0f} msg/s (aim >= 2,000)")
    index.drop_all()
    started = time.perf_counter()
    scope = index.scope(f"u{alice.pk}")
    print(f"index load ({scope.count:,} vectors, exact search) {time.perf_counter() - started:.2f} s; memory "
          f"{scope.memory_bytes() / 2**20:.1f} MiB = {scope.memory_bytes() / count:.0f} bytes per message")
    queries = [q for _k, q, _e in mailgen.QUERIES]
    for mode, aim in (("semantic", 100), ("hybrid", 100), ("text", 100)):
        samples = timed(lambda: [ids_of(client, q, mode, 20) for q in queries], 1)  # warm-up
        samples = []
        CPU.clear()
        for _ in range(runs):
            for q in queries:
                samples += timed(lambda: ids_of(client, q, mode, 20), 1)
        p95 = pct(samples, 0.95)
        print(f"{mode:9} query, 20 rows: p50 {statistics.median(samples):6.1f} ms  p95 {p95:6.1f} ms "
              f"(aim p95 <= {aim} ms{'' if p95 <= aim else ': OVER'}; {len(samples)} samples); "
              f"CPU p50 {statistics.median(CPU):6.1f} ms  p95 {pct(CPU, 0.95):6.1f} ms")
    rng = random.Random(5)
    sample_ids = rng.sample(list(Message.objects.values_list("pk", flat=True)[:50000]), min(100, count))
    samples = []
    CPU.clear()
    for pk in sample_ids:
        samples += timed(lambda: client.get(f"/api/messages/{pk}/related/"), 1)
    p95 = pct(samples, 0.95)
    print(f"related messages: p50 {statistics.median(samples):6.1f} ms  p95 {p95:6.1f} ms (aim p95 <= 50 ms"
          f"{'' if p95 <= 50 else ': OVER'}; {len(samples)} samples); CPU p50 {statistics.median(CPU):6.1f} ms  "
          f"p95 {pct(CPU, 0.95):6.1f} ms")
    return scope.matrix[:scope.count].copy()


def ann(base: np.ndarray, total: int, runs: int) -> None:
    from usearch.index import MetricKind, search as exact_search

    from pipeline.semantic import index, model

    rng = np.random.default_rng(3)
    started = time.perf_counter()
    picks = rng.integers(0, len(base), total)
    noisy = base[picks].astype(np.float32) + rng.normal(0, 12, (total, base.shape[1])).astype(np.float32)
    vectors = np.clip(np.rint(noisy), -127, 127).astype(np.int8)
    del noisy
    print(f"\nANN: {total:,} vectors from the real ones + noise, made in {time.perf_counter() - started:.1f} s")
    scope = index.ScopeIndex("bench", 0)
    scope.messages = np.array([i.to_bytes(16, "big") for i in range(total)], dtype="V16")
    scope.alive = np.ones(total, dtype=bool)
    started = time.perf_counter()
    scope._start_graph()
    scope.graph.add(np.arange(total, dtype=np.uint64), vectors, threads=0)
    scope.count = total
    build = time.perf_counter() - started
    print(f"HNSW build (usearch, i8, connectivity 16): {build:.1f} s = {total / build:,.0f} vectors/s; memory "
          f"{scope.memory_bytes() / 2**20:.0f} MiB = {scope.memory_bytes() / total:.0f} bytes per vector")
    queries = [q for _k, q, _e in mailgen.QUERIES]
    samples = []
    for _ in range(runs):
        for q in queries:
            samples += timed(lambda: scope.search(model.quantize(model.embed_texts([q]))[0], 20), 1)
    print(f"semantic query at {total:,} (embed + ANN, 20 messages): p50 {statistics.median(samples):.1f} ms "
          f"p95 {pct(samples, 0.95):.1f} ms")
    probes = vectors[rng.integers(0, total, 200)]
    samples = []
    for probe in probes:
        samples += timed(lambda: scope.search(probe, 50), 1)
    print(f"related-style search at {total:,} (a stored vector, 50 neighbours): p50 {statistics.median(samples):.1f} ms "
          f"p95 {pct(samples, 0.95):.1f} ms")
    hit = 0
    for probe in probes[:50]:
        truth = set(np.asarray(exact_search(vectors, probe, 10, MetricKind.Cos, exact=True).keys).tolist())
        found = set(np.asarray(scope.graph.search(probe, 10).keys).tolist())
        hit += len(truth & found)
    print(f"ANN recall@10 against exact search (50 probes): {hit / 500:.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--ann", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--ann-only", action="store_true",
                        help="only the ANN part, from 20,000 generated messages' vectors (no database)")
    args = parser.parse_args()
    if args.ann_only:
        from pipeline.semantic import chunking, model

        texts = [" ".join(chunking.chunks(m["subject"], m["body"])) for m in mailgen.filler(20_000, seed=99)]
        print(f"load average at start {os.getloadavg()[0]:.2f} (2 cores, shared with other sessions)")
        ann(model.quantize(model.embed_texts(texts)), args.ann, args.runs)
        print(f"load average at end {os.getloadavg()[0]:.2f}")
        return

    settings.MIGRATION_MODULES = {app.label: None for app in apps.get_app_configs()}
    settings.ALLOWED_HOSTS = ["testserver"]
    name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        from django.contrib.auth import get_user_model
        from django.test import Client
        from django.test.utils import setup_test_environment

        from pipeline.semantic import embed, model

        setup_test_environment()
        print(f"database: {connection.vendor}; load average at start {os.getloadavg()[0]:.2f} "
              f"(2 cores, shared with other sessions)")
        started = time.perf_counter()
        model.get()
        print(f"model loaded (offline, from the wheel) in {time.perf_counter() - started:.2f} s")
        alice = get_user_model().objects.create_user("alice", "alice@example.test", "x")
        client = Client()
        client.force_login(alice)
        started = time.perf_counter()
        corpus = ingest_corpus(alice)
        kinds = store(alice, mailgen.filler(QUALITY_FILLER))
        needle_kinds = store(alice, mailgen.needles(), start_index=1_000_000)
        embed.reindex()
        print(f"quality set: {corpus} corpus messages + {len(kinds):,} filler + {len(needle_kinds)} needles, "
              f"embedded in {time.perf_counter() - started:.1f} s")
        quality(client, alice, needle_kinds)
        if args.messages:
            base = speed(client, alice, args.messages, args.runs)
            if args.ann:
                ann(base, args.ann, args.runs)
        print(f"load average at end {os.getloadavg()[0]:.2f}")
    finally:
        connection.creation.destroy_test_db(name, verbosity=0)


if __name__ == "__main__":
    main()
