"""The embedding model: WordLlama l2_supercat, 256 dimensions, weights shipped inside the wheel.

Loaded fully offline. WordLlama looks for its weights in the package (present) and for its
tokenizer file under `<cache_dir>/tokenizers/` (the wheel keeps it in `wordllama/tokenizers/`,
which the loader does not look in), and downloads from Hugging Face whatever it does not find. So
the packaged tokenizer file is copied into `<data dir>/models/wordllama/tokenizers/` and the
loader runs with disable_download=True: a missing file is an error, never a request.

One model per process (16 MB of weights), loaded on first use.
"""

import os
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np
from django.conf import settings

CONFIG = "l2_supercat"
DIMENSIONS = 256
_lock = threading.Lock()
_model = None


class ModelUnavailable(Exception):
    """The packaged model files are missing (a broken install): never fetched from the network."""


def cache_dir() -> Path:
    return Path(settings.DATA_DIR) / "models" / "wordllama"


def _packaged_tokenizer() -> Path:
    import wordllama
    from wordllama.config import WordLlamaModels

    name = getattr(WordLlamaModels, CONFIG).tokenizer_config
    return Path(wordllama.__file__).parent / "tokenizers" / name


def prepare_cache(target: Path | None = None) -> Path:
    """Copy the wheel's tokenizer file where the loader looks for it (idempotent)."""
    target = target or cache_dir()
    source = _packaged_tokenizer()
    if not source.exists():
        raise ModelUnavailable(f"the wordllama package has no tokenizer file at {source}")
    destination = target / "tokenizers" / source.name
    if not destination.exists() or destination.stat().st_size != source.stat().st_size:
        destination.parent.mkdir(parents=True, exist_ok=True)
        # A name of its own: the workers of a new install all load the model at once, and with
        # one shared name the first to rename took the others' file away (FileNotFoundError).
        handle, partial = tempfile.mkstemp(prefix=f"{source.name}.", suffix=".partial", dir=destination.parent)
        os.close(handle)
        try:
            shutil.copyfile(source, partial)
            Path(partial).replace(destination)  # atomic: another process never reads half a file
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
    return target


def load(target: Path | None = None):
    """A new WordLlamaInference read from the package and the cache dir, with no network access."""
    from wordllama import WordLlama

    directory = prepare_cache(target)
    try:
        model = WordLlama.load(config=CONFIG, dim=DIMENSIONS, cache_dir=directory, disable_download=True)
    except FileNotFoundError as exc:
        raise ModelUnavailable(str(exc)) from exc
    return model


class Embedder:
    """The model's embedding table with an unpadded copy of its tokenizer: WordLlama pads every
    batch to its longest text, which embed_texts has no use for."""

    def __init__(self, wordllama_model):
        from tokenizers import Tokenizer

        self.model = wordllama_model
        self.table = wordllama_model.embedding
        self.tokenizer = Tokenizer.from_str(wordllama_model.tokenizer.to_str())
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()


def get() -> Embedder:
    """This process's model, loaded once."""
    global _model
    if _model is None:
        with _lock:
            if _model is None:
                _model = Embedder(load())
    return _model


def embed_texts(texts: list[str]) -> np.ndarray:
    """Unit vectors (float32, one row per text) as WordLlama's average pooling makes them, without
    its padding: the ids of all texts are summed per text with one reduceat, so a batch of
    texts of very different lengths costs their total length, not count × the longest."""
    embedder = get()
    if not texts:
        return np.zeros((0, DIMENSIONS), dtype=np.float32)
    encoded = embedder.tokenizer.encode_batch(texts, add_special_tokens=False)
    lengths = np.fromiter((len(e.ids) for e in encoded), dtype=np.int64, count=len(encoded))
    ids = np.fromiter((i for e in encoded for i in e.ids), dtype=np.int64, count=int(lengths.sum()))
    vectors = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
    present = lengths > 0
    if ids.size:
        np.clip(ids, 0, embedder.table.shape[0] - 1, out=ids)
        starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))[present]
        vectors[present] = np.add.reduceat(embedder.table[ids], starts, axis=0)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def quantize(vectors: np.ndarray) -> np.ndarray:
    """int8 rows with the same direction (cosine is all we compare), scaled so each row's largest
    component is ±127."""
    peak = np.abs(vectors).max(axis=1, keepdims=True)
    scaled = np.divide(vectors * 127.0, peak, out=np.zeros_like(vectors), where=peak > 0)
    return np.rint(scaled).astype(np.int8)
