"""The ``indexer`` command: ``rebuild``, ``search``, ``serve`` and ``verify`` over plain functions.

Built with `store.cli_contract` (exit 0 on success, 1 on a pipeline error, 2 on bad usage,
``--version``, ``--show-config``). The store folder is ``[store] path`` of pipeline.toml
unless ``--store`` is given. Heavy libraries are imported inside the commands.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from indexer.config import Device, Engine, IndexerConfig, Precision
from store.cli_contract import (
    UsageProblem,
    config_option,
    existing_file,
    fail,
    flag,
    load_stage,
    make_app,
    show_config_option,
)
from store.config import StoreConfig, resolve_config


def _pipeline_errors() -> tuple[type[BaseException], ...]:
    from indexer.errors import IndexerError
    from store.reader import StoreError

    return (IndexerError, StoreError, ValueError)


app = make_app(
    "Embed the article store into a sharded FAISS index, search it, serve it over HTTP, verify it.", _pipeline_errors
)

StoreOpt = Annotated[
    Path | None,
    typer.Option(
        "--store", help="Article store folder.", show_default="[store] path of pipeline.toml, else data/pubmed"
    ),
]
IndexOpt = Annotated[Path | None, flag(IndexerConfig, "index", "--index")]
ConfigOpt = Annotated[Path | None, config_option("indexer")]
ShowConfig = Annotated[bool, show_config_option()]


def _config(path: Path | None, show: bool = False) -> IndexerConfig:
    store = resolve_config(StoreConfig, "store", path)
    return load_stage(IndexerConfig, "indexer", path, show=show, also=[store]).config


def _setup_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@app.command()
def rebuild(
    store: StoreOpt = None,
    index: IndexOpt = None,
    model: Annotated[str | None, flag(IndexerConfig, "model", help="Model: Hugging Face id or local folder.")] = None,
    device: Annotated[Device | None, flag(IndexerConfig, "device")] = None,
    precision: Annotated[
        Precision | None,
        flag(IndexerConfig, "precision", help="auto is fp16 on CUDA, bf16 on CPUs with native bf16, else fp32."),
    ] = None,
    factory: Annotated[str | None, flag(IndexerConfig, "factory", help="auto or a FAISS factory string.")] = None,
    shard_size: Annotated[int | None, flag(IndexerConfig, "shard_size", help="PMID range width per shard.")] = None,
    batch_size: Annotated[int | None, flag(IndexerConfig, "batch_size", help="Chunks per embedding batch.")] = None,
    nprobe: Annotated[int | None, flag(IndexerConfig, "nprobe", help="Fix nprobe instead of tuning it.")] = None,
    full: Annotated[bool, typer.Option("--full", help="Rebuild every shard and retrain.")] = False,
    wait: Annotated[
        bool, typer.Option("--wait", help="If another rebuild holds this index folder, wait for it (else exit 1).")
    ] = False,
    engine: Annotated[
        Engine | None,
        flag(IndexerConfig, "engine", help="local, or ray: read, embed and write shards on a Ray cluster."),
    ] = None,
    ray_address: Annotated[
        str | None,
        flag(
            IndexerConfig, "ray_address", help="Ray cluster to join; default: start a local one.", envvar="RAY_ADDRESS"
        ),
    ] = None,
    config: ConfigOpt = None,
    show_config: ShowConfig = False,
) -> None:
    """Bring the index up to date with the store (incremental; resumes a killed run)."""
    _setup_logging()
    cfg = _config(config, show_config)
    from indexer.build import rebuild as run_rebuild

    summary = run_rebuild(cfg)
    if summary.reasons and summary.full:
        typer.echo(f"full rebuild: {'; '.join(summary.reasons)}", err=True)
    typer.echo(summary.line())


@app.command()
def search(
    question: Annotated[str | None, typer.Argument(help="The question or text to search for.")] = None,
    queries: Annotated[
        str | None,
        typer.Option("--queries", help="File with one query per line, or - for stdin; prints one JSON line per query."),
    ] = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="Hits to return.")] = 10,
    pmids: Annotated[str | None, typer.Option(help="Comma-separated PMIDs to search within.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print hits as JSON.")] = False,
    server: Annotated[
        str | None, typer.Option("--server", help="URL of a running `indexer serve` to ask (no model loaded here).")
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option("--token-file", help="File holding the server's bearer token.")
    ] = None,
    index: IndexOpt = None,
    config: ConfigOpt = None,
    show_config: ShowConfig = False,
) -> None:
    """Print the chunks nearest to a question, or to every line of --queries (JSON lines)."""
    _setup_logging()
    cfg = _config(config, show_config)
    if (question is None) == (queries is None):
        raise UsageProblem("give a QUESTION or --queries FILE|-, not both")
    if server is not None and not server.startswith(("http://", "https://")):
        raise UsageProblem(f"--server: must be an http:// or https:// URL (got {server!r})")
    wanted: list[int] | None = None
    if pmids is not None:
        try:
            wanted = [int(p) for p in pmids.split(",") if p.strip()]
        except ValueError:
            raise UsageProblem(f"--pmids: must be comma-separated integers (got {pmids!r})") from None
    texts = [question] if question is not None else _read_queries(queries or "-")
    results = _search_all(texts, k, wanted, server, existing_file(token_file, "--token-file"), cfg.index)
    if queries is not None:
        for text, hits in zip(texts, results, strict=True):
            typer.echo(json.dumps({"query": text, "hits": hits}, ensure_ascii=False))
        return
    hits = results[0]
    if as_json:
        typer.echo(json.dumps(hits, ensure_ascii=False, indent=2))
        return
    for rank, hit in enumerate(hits, 1):
        text = " ".join(hit["text"].split())
        typer.echo(f"{rank:>3}. {hit['score']:.3f}  pmid {hit['pmid']} chunk {hit['chunk']}  {text[:160]}")
    typer.echo(f"{len(hits)} hits from {server or cfg.index}", err=True)


def _read_queries(source: str) -> list[str]:
    if source == "-":
        lines = sys.stdin.read().splitlines()
    else:
        try:
            lines = Path(source).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise UsageProblem(f"--queries: no such file: {source}") from None
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"{source}: cannot read queries ({exc})")
    texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        fail(f"{'stdin' if source == '-' else source}: no queries (one per line)")
    return texts


def _search_all(
    texts: list[str],
    k: int,
    wanted: list[int] | None,
    server: str | None,
    token_file: Path | None,
    index: Path,
) -> list[list[dict[str, Any]]]:
    """Hits as dicts, from the server (no model loaded here) or from the index opened in this process."""
    if server is not None:
        from indexer.client import read_token, search_server

        return search_server(server, texts, k, wanted, read_token(token_file))
    from indexer.search import open_index

    opened = open_index(index)
    out: list[list[dict[str, Any]]] = []
    for first in range(0, len(texts), 256):
        found = opened.search(texts[first : first + 256], k=k, pmids=wanted)
        out.extend([hit.__dict__ for hit in hits] for hits in found)
    return out


@app.command()
def serve(
    index: IndexOpt = None,
    host: Annotated[str, typer.Option(help="Address to bind; loopback unless you mean to expose it.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to bind; 0 picks a free one.")] = 8000,
    token_file: Annotated[
        Path | None,
        typer.Option("--token-file", help="File holding a bearer token every request must send."),
    ] = None,
    device: Annotated[Device, typer.Option(help="Where the model embeds queries.")] = "auto",
    max_k: Annotated[int, typer.Option("--max-k", min=1, help="Largest k a request may ask.")] = 100,
    max_pmids: Annotated[int, typer.Option("--max-pmids", min=1, help="Most PMIDs in one request's filter.")] = 10_000,
    max_body: Annotated[int, typer.Option("--max-body", min=1024, help="Largest request body in bytes.")] = 1 << 20,
    batch: Annotated[int, typer.Option(min=1, help="Most queries embedded and searched together.")] = 64,
    reload_seconds: Annotated[
        float, typer.Option("--reload-seconds", min=0.05, help="How often to look for a newly published manifest.")
    ] = 1.0,
    config: ConfigOpt = None,
    show_config: ShowConfig = False,
) -> None:
    """Serve POST /search and GET /health over HTTP (JSON); picks up new rebuilds without a restart."""
    _setup_logging()
    cfg = _config(config, show_config)
    from indexer.client import read_token
    from indexer.serve import ServeLimits, run_server

    token = read_token(existing_file(token_file, "--token-file"))
    limits = ServeLimits(max_body=max_body, max_k=max_k, max_pmids=max_pmids, batch=batch)
    try:
        run_server(cfg.index, host, port, token, device, limits, reload_seconds)
    except OSError as exc:
        fail(f"cannot serve on {host}:{port} ({exc.strerror or exc})")


@app.command()
def verify(
    store: StoreOpt = None,
    index: IndexOpt = None,
    queries: Annotated[int, typer.Option(min=1, help="Sampled queries for recall@10.")] = 200,
    no_store: Annotated[bool, typer.Option("--no-store", help="Skip the comparison with the store.")] = False,
    config: ConfigOpt = None,
    show_config: ShowConfig = False,
) -> None:
    """Check checksums, counts against the store, and recall@10 against exact search."""
    _setup_logging()
    cfg = _config(config, show_config)
    from indexer.verify import verify_index

    report = verify_index(cfg.index, None if no_store else cfg.store, queries, cfg.recall_sample)
    for problem in report.problems[1:]:
        typer.echo(f"problem: {problem}", err=True)
    if not report.ok:
        fail(report.line())
    _print_verify_table(report, cfg.index)
    typer.echo(report.line())


def _print_verify_table(report: Any, index: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"index {index}", show_header=False)
    table.add_row("shards", f"{report.shards:,}")
    table.add_row("vectors", f"{report.vectors:,}")
    table.add_row("articles", f"{report.articles:,}")
    if report.store_articles is not None:
        table.add_row("store articles", f"{report.store_articles:,}")
        table.add_row("  missing / extra / stale", f"{report.missing:,} / {report.extra:,} / {report.stale:,}")
    if report.recall is not None:
        table.add_row("recall@10 vs exact", f"{report.recall:.3f} (nprobe {report.nprobe})")
    Console().print(table)


def main() -> None:
    app(prog_name="indexer")


if __name__ == "__main__":
    main()
