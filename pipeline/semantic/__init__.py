"""Semantic search: a local embedding model, one vector per chunk of each message, an in-process
nearest-neighbour index per scope. Its own app (label `semantic`) so its tables and migrations
stay apart from the pipeline's.

    model.py     WordLlama loaded from the wheel, never from the network
    chunking.py  what is embedded: subject + text without quoted replies and signatures, in chunks
    embed.py     the batched pipeline step after standardize (tasks.embed) and reindex
    index.py     per-process nearest-neighbour search over one scope (an account, or a user's
                 mail without an account): exact below EXACT_LIMIT vectors, usearch HNSW above

Who may see what is not decided here: frontend/semantic_search.py asks only for the scopes the
user may see (frontend/access.py) and re-reads every hit through access before showing it.
"""
