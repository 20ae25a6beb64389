"""Benchmark: `indexer rebuild` at scale, in bounded memory, against the floor of reading and tokenising.

Synthetic stores of realistic articles: titles and 8-14 sentence abstracts whose words
are drawn (by their real frequency, in sentences of real lengths) from the vocabulary of
the real PubMed XML fixtures in tests/data/pubmed and ../shared/fixtures (baseline files
included), with PMIDs spread uniformly over 1..40,000,000, so over 40 shard ranges of the
default width. For each size (default 0.2M, 1M and 3M articles):

- rebuild with a tiny randomly initialised sentence-transformers model saved to a local
  folder (``--model PATH``): its cost is negligible, so this measures the pipeline around
  the model. Printed: articles/s and peak RSS of the rebuild process;
- the floor, in the same run: a process that reads the same texts (the same streaming
  reader) and tokenises them once with the fast tokenizer's batched call (one call per
  read batch), nothing else;
- targets: peak RSS grows by at most 0.5 GB from the smallest to the largest store; the
  time outside the model is at most 2x the floor.

Then a subset (default 20k articles) is rebuilt with the packaged all-MiniLM-L6-v2, and
the same chunks are embedded alone (tokenised beforehand, only ``encode`` timed): target
total at most 1.15x embedding alone. Every step runs in its own process, so peak RSS is
its own. Data goes under ``--data`` and is deleted afterwards unless ``--keep``.

Usage: python benchmarks/scale_index.py [--sizes 200000,1000000,3000000] [--minilm 20000]
                                        [--rounds 1] [--data /tmp/scale-index] [--keep]
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import resource
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FIXTURES = [REPO / "tests" / "data" / "pubmed", REPO.parent / "shared" / "fixtures" / "pubmed"]
PMID_SPACE = 40_000_000
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9\-]*|\d+(?:\.\d+)?%?")


def _peak_rss_mb() -> float:
    """This process's peak resident memory, MB.

    From ``VmHWM``, which starts afresh at exec; ``ru_maxrss`` would carry over the peak of
    the parent that forked it (here, the one that generated the store).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- the vocabulary and the stores -------------------------------------------------------------


def _fixture_texts() -> tuple[list[str], list[str]]:
    """Titles and abstract texts of every real PubMed XML fixture."""
    from lxml import etree

    titles, abstracts = [], []
    for root in FIXTURES:
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if not path.is_file() or not (path.name.endswith(".xml") or path.name.endswith(".xml.gz")):
                continue
            opener = gzip.open if path.suffix == ".gz" else open
            try:
                with opener(path, "rb") as handle:
                    for _, element in etree.iterparse(handle, tag=("ArticleTitle", "AbstractText"), recover=True):
                        text = " ".join("".join(element.itertext()).split())
                        if text:
                            (titles if element.tag == "ArticleTitle" else abstracts).append(text)
                        element.clear()
            except etree.LxmlError:
                continue
    return titles, abstracts


def vocabulary() -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(words, their frequencies, real sentence lengths, real title lengths) from the fixtures."""
    titles, abstracts = _fixture_texts()
    counts: Counter[str] = Counter()
    lengths = []
    for text in abstracts:
        for sentence in re.split(r"(?<=[.!?])\s+", text):
            words = _WORD.findall(sentence)
            if len(words) >= 3:
                counts.update(w.lower() if not w.isupper() else w for w in words)
                lengths.append(len(words))
    title_lengths = [len(_WORD.findall(t)) for t in titles if len(_WORD.findall(t)) >= 3]
    words = [w for w, _ in counts.most_common()]
    freq = np.array([counts[w] for w in words], dtype=np.float64)
    return words, freq / freq.sum(), np.array(lengths), np.array(title_lengths or [10])


def _sentences(words: list[str], p: np.ndarray, lengths: np.ndarray, n: int, rng: np.random.Generator) -> list[str]:
    sizes = rng.choice(lengths, n)
    picks = rng.choice(len(words), int(sizes.sum()), p=p)
    out, at = [], 0
    for size in sizes.tolist():
        chosen = [words[i] for i in picks[at : at + size]]
        at += size
        chosen[0] = chosen[0][:1].upper() + chosen[0][1:]
        out.append(" ".join(chosen) + ".")
    return out


def make_store(store: Path, n: int, seed: int = 0) -> dict[str, Any]:
    """A store of ``n`` synthetic articles (parts of 100k rows, written PMID-sorted)."""
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    from store.atomic import atomic_write
    from store.schema import ARTICLE_SCHEMA
    from store.writer import ARTICLES_DIR, new_part_name

    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    words, p, lengths, title_lengths = vocabulary()
    pool = _sentences(words, p, lengths, 200_000, rng)
    title_pool = [t.rstrip(".") for t in _sentences(words, p, title_lengths, 50_000, rng)]
    pmids = np.sort(rng.choice(PMID_SPACE, n, replace=False) + 1)
    folder = store / ARTICLES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    chars = 0
    for first in range(0, n, 100_000):
        block = pmids[first : first + 100_000]
        counts = rng.integers(8, 15, len(block))
        picks = rng.integers(0, len(pool), int(counts.sum()))
        abstracts, at = [], 0
        for c in counts.tolist():
            abstracts.append(" ".join(pool[i] for i in picks[at : at + c]))
            at += c
        titles = [title_pool[i] for i in rng.integers(0, len(title_pool), len(block))]
        chars += sum(map(len, abstracts)) + sum(map(len, titles))
        columns = {
            "pmid": pa.array(block, pa.int64()),
            "version": pa.array(np.ones(len(block), np.int32)),
            "title": pa.array(titles),
            "abstract": pa.array(abstracts),
            "source": pa.array(["baseline"] * len(block)),
            "fetched_at": pa.array([now] * len(block), pa.timestamp("ms", tz="UTC")),
        }
        table = pa.table(
            {f.name: columns.get(f.name, pa.nulls(len(block), f.type)) for f in ARTICLE_SCHEMA}, schema=ARTICLE_SCHEMA
        )
        # PMID-sorted row groups of about 100k PMIDs each, as the store's writers make them,
        # so a range read opens only the row groups that can hold it.
        with atomic_write(folder / new_part_name()) as handle:
            pq.write_table(table, handle, compression="zstd", row_group_size=max(1_000, n * 100_000 // PMID_SPACE))
    return {"articles": n, "vocabulary": len(words), "mean_chars": chars / n, "seconds": time.perf_counter() - started}


def tiny_model(folder: Path) -> Path:
    """A randomly initialised 8-wide BERT sentence-transformer with no transformer layer (token
    and position embeddings, mean pooling) and the packaged MiniLM tokenizer.

    What remains of its cost is padding the token ids into tensors and one lookup, so the
    rebuild's time is the pipeline's around the model (a 1-layer model spent most of its
    time in attention over 256 tokens: about 2,000 chunks/s inside a rebuild on two cores).
    """
    if (folder / "modules.json").is_file():
        return folder
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    from indexer.embedding import resolve_model

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("default")[1])
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=8,
        num_hidden_layers=0,
        num_attention_heads=1,
        intermediate_size=16,
        max_position_embeddings=512,
    )
    raw = folder / "transformer"
    BertModel(config).save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    transformer = models.Transformer(str(raw), max_seq_length=256)
    pooling = models.Pooling(transformer.get_word_embedding_dimension(), "mean")
    SentenceTransformer(modules=[transformer, pooling]).save(str(folder))
    return folder


# -- the measured steps, each in a child process -------------------------------------------------


def child_rebuild(
    store: str, index: str, model: str, batch_tokens: str = "0", precision: str = "auto"
) -> dict[str, Any]:
    """A full rebuild, timed after the model is loaded (as the floor and embedding alone are)."""
    from indexer.build import rebuild
    from indexer.config import IndexerConfig
    from indexer.embedding import Embedder

    tokens = int(batch_tokens) or None
    cfg = IndexerConfig(
        store=Path(store),
        index=Path(index),
        model=model,
        device="cpu",
        progress=False,
        batch_tokens=tokens,
        precision=precision,
    )
    loading = time.perf_counter()
    embedder = Embedder(model, "cpu", cfg.batch_size, cfg.threads, tokens, cfg.precision)
    started = time.perf_counter()
    summary = rebuild(cfg, embedder)
    return {
        "load_seconds": started - loading,
        "seconds": time.perf_counter() - started,
        "embed_seconds": summary.embed_seconds,
        "articles": summary.articles,
        "vectors": summary.vectors,
        "factory": summary.factory,
        "peak_rss_mb": _peak_rss_mb(),
        "load": _load(),
    }


def _load() -> str:
    """The machine's load average over the last 1, 5 and 15 minutes."""
    import os

    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def child_floor(store: str, model: str) -> dict[str, Any]:
    """Read the same texts with the same streaming reader and tokenise them once, batched."""
    from indexer.embedding import Embedder
    from store.reader import iter_live_batches, live_ranges

    embedder = Embedder(model, "cpu")
    started = time.perf_counter()
    articles = tokens = 0
    for lo, hi in live_ranges(store, 1_000_000):
        for table in iter_live_batches(store, lo, hi, columns=["title", "abstract"]):
            texts = table.column("title").to_pylist() + table.column("abstract").to_pylist()
            encoded = embedder.tokenize([t or "" for t in texts])
            articles += table.num_rows
            tokens += sum(len(ids) for ids, _ in encoded)
    return {
        "seconds": time.perf_counter() - started,
        "articles": articles,
        "tokens": tokens,
        "peak_rss_mb": _peak_rss_mb(),
    }


def child_embed(store: str) -> dict[str, Any]:
    """MiniLM embedding alone on the chunks rebuild embeds (tokenised beforehand, untimed)."""
    from indexer.ranges import Settings, read_range, worker_for

    settings = Settings(store, "", "default", "cpu", "auto", 128, None, None, None, 48, 1_000_000, 2048)
    worker = worker_for(settings)
    from store.reader import live_ranges

    tokens = []
    for lo, hi in live_ranges(store, 1_000_000):
        for pmids, titles, abstracts in read_range(store, lo, hi):
            tokens.extend(worker.chunker.chunk_many(pmids.tolist(), titles, abstracts)[1])
    started = time.perf_counter()
    worker.embedder.encode_tokens(tokens)
    return {"seconds": time.perf_counter() - started, "chunks": len(tokens), "peak_rss_mb": _peak_rss_mb()}


def _child(*args: str) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", *args]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        sys.exit(f"{' '.join(args[:1])} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", default="200000,1000000,3000000", help="comma list of store sizes (articles)")
    parser.add_argument("--minilm", type=int, default=20_000, help="articles of the MiniLM subset (0: skip)")
    parser.add_argument("--data", default="/tmp/scale-index", help="folder for stores, indexes and the tiny model")
    parser.add_argument("--keep", action="store_true", help="keep the generated data (stores are reused)")
    parser.add_argument(
        "--batch-tokens",
        type=int,
        default=65_536,
        help="padded tokens per embedding batch of the tiny model (large: its per-batch cost is what remains)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds of the MiniLM arm (best of each)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, rest = args.child[0], args.child[1:]
        result = {"rebuild": child_rebuild, "floor": child_floor, "embed": child_embed}[kind](*rest)
        print(json.dumps(result))
        return
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    try:
        model = str(tiny_model(data / "tiny-model"))
        rows = []
        for n in [int(x) for x in args.sizes.split(",") if x]:
            store = data / f"store-{n}"
            made = make_store(store, n, seed=n) if not store.exists() else {"seconds": 0.0, "mean_chars": 0}
            rebuilt = _child("rebuild", str(store), str(data / f"index-{n}"), model, str(args.batch_tokens), "fp32")
            floor = _child("floor", str(store), model)
            outside = rebuilt["seconds"] - rebuilt["embed_seconds"]
            rows.append((n, rebuilt, floor, outside))
            print(
                f"{n:>9,} articles (store made in {made['seconds']:.0f}s, {made['mean_chars']:.0f} chars/article): "
                f"rebuild {rebuilt['articles'] / rebuilt['seconds']:8.0f} articles/s, peak RSS "
                f"{rebuilt['peak_rss_mb']:7.0f} MB, {rebuilt['vectors']:,} vectors, {rebuilt['factory']}; "
                f"floor (read + tokenise once) {floor['articles'] / floor['seconds']:8.0f} articles/s, peak RSS "
                f"{floor['peak_rss_mb']:6.0f} MB; outside the model {outside:.1f}s = "
                f"{outside / floor['seconds']:.2f}x the floor (target <= 2x); load {rebuilt['load']}",
                flush=True,
            )
            shutil.rmtree(data / f"index-{n}", ignore_errors=True)
            if len(rows) > 1:  # after each size, so a long run reports as it goes
                small, large = min(rows, key=lambda r: r[0]), max(rows, key=lambda r: r[0])
                growth = large[1]["peak_rss_mb"] - small[1]["peak_rss_mb"]
                print(
                    f"peak RSS growth {small[0]:,} -> {large[0]:,} articles: {growth:+.0f} MB (target <= 512 MB)",
                    flush=True,
                )
        if args.minilm:
            store = data / f"store-minilm-{args.minilm}"
            if not store.exists():
                make_store(store, args.minilm, seed=7)
            # Rounds alternate the two arms, so load from other work on the machine falls on both;
            # the best round of each is compared.
            rebuilds, alones = [], []
            for _ in range(args.rounds):
                shutil.rmtree(data / "index-minilm", ignore_errors=True)
                rebuilds.append(_child("rebuild", str(store), str(data / "index-minilm"), "default"))
                alones.append(_child("embed", str(store)))
                print(
                    f"  round: rebuild {rebuilds[-1]['seconds']:.1f}s (model {rebuilds[-1]['embed_seconds']:.1f}s), "
                    f"embedding alone {alones[-1]['seconds']:.1f}s; load {rebuilds[-1]['load']}",
                    flush=True,
                )
            rebuilt = min(rebuilds, key=lambda r: r["seconds"])
            alone = min(alones, key=lambda r: r["seconds"])
            print(
                f"MiniLM, {rebuilt['articles']:,} articles, {rebuilt['vectors']:,} chunks: rebuild "
                f"{rebuilt['seconds']:.1f}s, embedding alone {alone['seconds']:.1f}s (best of {args.rounds}): "
                f"{rebuilt['seconds'] / alone['seconds']:.2f}x (target <= 1.15x); peak RSS "
                f"{rebuilt['peak_rss_mb']:.0f} MB",
                flush=True,
            )
    finally:
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
