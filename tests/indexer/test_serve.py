"""`indexer serve` as a real server on port 0: same hits as `open_index`, filters, concurrency,
hot reload of a rebuild, 400s, the token, SIGTERM; and `indexer search --queries`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from indexer.cli import app
from indexer.embedding import Embedder
from indexer.search import open_index
from tests.indexer.conftest import make_config, write_articles
from tests.indexer.test_rebuild_search import question_from

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-token"


class Server:
    def __init__(self, root: Path, proc: subprocess.Popen[str], url: str) -> None:
        self.root, self.proc, self.url = root, proc, url

    def call(self, path: str, body: Any = None, token: str | None = TOKEN, raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.url + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def search(self, body: dict[str, Any]) -> list[list[dict[str, Any]]]:
        status, data = self.call("/search", body)
        assert status == 200, data
        return data["results"]


def start_server(root: Path, *extra: str) -> Server:
    (root / "token").write_text(TOKEN + "\n")
    cmd = [sys.executable, "-m", "indexer", "serve", "--index", str(root / "index"), "--port", "0"]
    cmd += ["--token-file", str(root / "token"), "--device", "cpu", "--reload-seconds", "0.2", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=root)
    assert proc.stdout is not None
    deadline = time.monotonic() + 180
    line = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("listening on ") or not line:
            break
    if not line.startswith("listening on "):
        proc.kill()
        raise AssertionError(f"server did not start (rc {proc.poll()}, last line {line!r})")
    return Server(root, proc, line.split()[-1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, base_build: Path) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("serve")
    shutil.copytree(base_build / "store", root / "store")
    shutil.copytree(base_build / "index", root / "index")
    srv = start_server(root)
    yield srv
    if srv.proc.poll() is None:
        srv.proc.kill()
        srv.proc.wait(30)


def as_dicts(hits: list[Any]) -> list[tuple[int, int, float, str]]:
    return [(h.pmid, h.chunk, round(h.score, 4), h.text) for h in hits]


def from_json(hits: list[dict[str, Any]]) -> list[tuple[int, int, float, str]]:
    return [(h["pmid"], h["chunk"], round(h["score"], 4), h["text"]) for h in hits]


def test_http_hits_equal_open_index(server: Server, abstracts: list[dict[str, Any]], embedder: Embedder) -> None:
    questions = [question_from(r) for r in abstracts[:40:5]]
    want = open_index(server.root / "index", embedder).search(questions, k=5)
    got = server.search({"queries": questions, "k": 5})
    assert [from_json(h) for h in got] == [as_dicts(h) for h in want]
    assert [hits[0]["pmid"] for hits in got] == [r["pmid"] for r in abstracts[:40:5]]
    status, health = server.call("/health")
    assert status == 200 and health["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert health["vectors"] == len(open_index(server.root / "index", embedder)) and health["generation"] == 1


def test_pmids_filter_over_http(server: Server, abstracts: list[dict[str, Any]]) -> None:
    question = question_from(abstracts[3])
    allowed = [abstracts[10]["pmid"], abstracts[11]["pmid"]]
    hits = server.search({"queries": [question], "k": 10, "pmids": allowed})[0]
    assert hits and {h["pmid"] for h in hits} == set(allowed)
    per_query = server.search(
        {"queries": [question, question], "k": 3, "pmids": [[abstracts[3]["pmid"]], [abstracts[12]["pmid"]]]}
    )
    assert {h["pmid"] for h in per_query[0]} == {abstracts[3]["pmid"]}
    assert {h["pmid"] for h in per_query[1]} == {abstracts[12]["pmid"]}
    assert server.search({"queries": [question], "k": 3, "pmids": [1]}) == [[]]


def test_concurrent_clients_get_their_own_answers(
    server: Server, abstracts: list[dict[str, Any]], embedder: Embedder
) -> None:
    rows = abstracts[:32]
    questions = [question_from(r) for r in rows]
    want = [as_dicts(h) for h in open_index(server.root / "index", embedder).search(questions, k=3)]
    _, before = server.call("/health")
    errors: list[str] = []
    got: dict[int, Any] = {}

    def client(n: int) -> None:
        try:
            got[n] = from_json(server.search({"queries": [questions[n]], "k": 3})[0])
        except Exception as exc:  # collected and asserted below
            errors.append(repr(exc))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(len(questions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    # each request is embedded in a different batch (bf16 on some CPUs): same hits, scores within 0.02
    for n in range(len(questions)):
        assert got[n][0][:2] == want[n][0][:2] and got[n][0][3] == want[n][0][3], f"client {n} got another answer"
        assert abs(got[n][0][2] - want[n][0][2]) < 0.02
    _, after = server.call("/health")
    served = after["served"]["requests"] - before["served"]["requests"]
    batches = after["served"]["batches"] - before["served"]["batches"]
    assert served == len(questions) and batches < served, "concurrent requests share batches"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"queries": [""]}, "queries[0] is empty"),
        ({"queries": []}, "non-empty list"),
        ({"query": "x"}, "unknown field"),
        ({"queries": ["x"], "k": 0}, "'k' must be an integer from 1 to 100"),
        ({"queries": ["x"], "k": 101}, "'k' must be an integer"),
        ({"queries": ["x"], "pmids": list(range(1, 10_002))}, "at most 10000"),
        ({"queries": ["x"], "pmids": ["12"]}, "positive integers"),
        ({"queries": ["x", "y"], "pmids": [[1]]}, "1 lists for 2 queries"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_requests_get_400(server: Server, body: Any, message: str) -> None:
    status, data = server.call("/search", body)
    assert status == 400 and message in data["error"]


def test_not_json_and_oversized_bodies(server: Server) -> None:
    status, data = server.call("/search", raw=b"{not json")
    assert status == 400 and "not valid JSON" in data["error"]
    status, data = server.call("/search", raw=json.dumps({"queries": ["x" * (2 << 20)]}).encode())
    assert status == 413 and "larger than" in data["error"]


def test_token_is_enforced(server: Server) -> None:
    for token in (None, "wrong"):
        for path, body in (("/search", {"queries": ["x"]}), ("/health", None)):
            status, data = server.call(path, body, token=token)
            assert status == 401 and "bearer token" in data["error"]


def test_search_queries_jsonl_locally_and_through_server(
    server: Server, abstracts: list[dict[str, Any]], tmp_path: Path
) -> None:
    questions = [question_from(r) for r in abstracts[:3]]
    (tmp_path / "q.txt").write_text("\n".join(questions) + "\n\n")
    runner = CliRunner()
    local = runner.invoke(
        app, ["search", "--queries", "-", "-k", "2", "--index", str(server.root / "index")], input="\n".join(questions)
    )
    assert local.exit_code == 0, local.output
    remote = runner.invoke(
        app,
        [
            "search",
            "--queries",
            str(tmp_path / "q.txt"),
            "-k",
            "2",
            "--server",
            server.url,
            "--token-file",
            str(server.root / "token"),
        ],
    )
    assert remote.exit_code == 0, remote.output
    for result in (local, remote):
        lines = [json.loads(line) for line in result.stdout.splitlines()]
        assert [line["query"] for line in lines] == questions
        assert [line["hits"][0]["pmid"] for line in lines] == [r["pmid"] for r in abstracts[:3]]
        assert all(len(line["hits"]) == 2 for line in lines)
    denied = runner.invoke(app, ["search", "x", "--server", server.url])
    assert denied.exit_code == 1 and "HTTP 401" in denied.output


def test_trainer_retrieval_through_server_equals_local(
    server: Server, abstracts: list[dict[str, Any]], tmp_path: Path
) -> None:
    from trainer.config import TrainerConfig
    from trainer.questions import Question
    from trainer.retrieval import retrieve

    questions = [
        Question("q1", question_from(abstracts[0]), "yes", (abstracts[0]["pmid"], abstracts[7]["pmid"])),
        Question("q2", question_from(abstracts[9]), "no", (abstracts[9]["pmid"], 12345)),
        Question("q3", "no documents", "no", ()),
    ]
    (tmp_path / "token").write_text(TOKEN)
    local = retrieve(questions, TrainerConfig(index=server.root / "index", retrieve_k=3))
    remote = retrieve(
        questions, TrainerConfig(index=None, index_server=server.url, index_token_file=tmp_path / "token", retrieve_k=3)
    )
    for got in (local, remote):
        assert got.missing == {"q2": [12345]}
        assert {c.pmid for c in got.chunks["q1"]} <= {abstracts[0]["pmid"], abstracts[7]["pmid"]}
        assert got.chunks["q2"] and {c.pmid for c in got.chunks["q2"]} == {abstracts[9]["pmid"]}
        assert got.chunks["q3"] == []
    key = {q: [(c.pmid, c.chunk, c.text) for c in chunks] for q, chunks in local.chunks.items()}
    assert key == {q: [(c.pmid, c.chunk, c.text) for c in chunks] for q, chunks in remote.chunks.items()}
    status, data = server.call("/indexed", {"pmids": [abstracts[0]["pmid"], 1]})
    assert status == 200 and data["indexed"] == [abstracts[0]["pmid"]]


def test_rebuild_published_while_serving_is_picked_up(
    server: Server, abstracts: list[dict[str, Any]], embedder: Embedder
) -> None:
    from indexer.build import rebuild

    new = abstracts[40:44]
    question = question_from(new[0])
    assert server.search({"queries": [question], "k": 1})[0][0]["pmid"] != new[0]["pmid"]
    failures: list[str] = []
    done = threading.Event()
    count = [0]

    def hammer() -> None:
        while not done.is_set():
            status, data = server.call("/search", {"queries": [question_from(abstracts[1])], "k": 3})
            count[0] += 1
            if status != 200 or data["results"][0][0]["pmid"] != abstracts[1]["pmid"]:
                failures.append(f"{status} {data}")

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        write_articles(server.root / "store", new)
        summary = rebuild(make_config(server.root / "store", server.root / "index"), embedder)
        assert summary.shards_written >= 1 and summary.shards_removed == 0
        deadline = time.monotonic() + 30
        while server.call("/health")[1]["generation"] < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        done.set()
        thread.join(120)
    assert not failures and count[0] > 0
    _, health = server.call("/health")
    assert health["generation"] == 2 and health["articles"] == 44
    assert server.search({"queries": [question], "k": 1})[0][0]["pmid"] == new[0]["pmid"]


def test_sigterm_stops_the_server_cleanly(server: Server) -> None:
    assert server.call("/health")[0] == 200
    server.proc.send_signal(signal.SIGTERM)
    out, _ = server.proc.communicate(timeout=60)
    assert server.proc.returncode == 0
    assert "stopped after" in out and "requests" in out
