"""`tribute.ray` on a real local Ray cluster (2 CPUs) and a real PostgreSQL + pgvector
(TRIBUTE_TEST_PG_URL; bindings/python/test.sh starts one): a distributed ingest builds the
same index as a one-process ingest, and a Ray Serve deployment with 2 replicas and 3
multiplexed adapters (at most 2 per replica) journals every receipt exactly once into the
shared Postgres journal. Without Ray or Postgres these tests skip, except under CI, where
they fail."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tribute
from conftest import ALICE, KEY0, LEDGER, LORA, PAYER, REPO, SAMPLE

CI = bool(os.environ.get("CI"))
PASSAGES = REPO / "examples" / "data" / "attribution" / "dev.jsonl"


def need(ok: bool, why: str) -> None:
    if not ok:
        if CI:
            pytest.fail(f"{why} (required under CI)", pytrace=False)
        pytest.skip(why)


try:
    import ray
    import ray.data
    from ray import serve

    import tribute.ray as tray
except ImportError:  # the extra is not installed
    ray = None


@pytest.fixture(scope="module")
def pg_url() -> str:
    url = os.environ.get("TRIBUTE_TEST_PG_URL", "")
    need(bool(url), "TRIBUTE_TEST_PG_URL is not set (bindings/python/test.sh starts a server)")
    return url


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    need(ray is not None, "the tribute[ray] extra (ray[data,serve]) is not installed")
    # Offline and quiet: no token auth files in ~/.ray, no usage reporting, logs in tmp.
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    # Replicas inherit the driver's environment: the signing key of their receipts.
    os.environ["TRIBUTE_KEY"] = KEY0
    ray.init(
        num_cpus=2,
        object_store_memory=200_000_000,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=str(tmp_path_factory.mktemp("ray")),
    )
    try:
        yield
    finally:
        serve.shutdown()
        ray.shutdown()


def passages(tag: str) -> list[dict[str, Any]]:
    """The dev set's distinct passages (real Wikipedia text) as documents with run-unique ids."""
    docs: dict[str, dict[str, Any]] = {}
    texts: set[str] = set()
    for line in PASSAGES.read_text().splitlines():
        for p in json.loads(line)["passages"]:
            if p["id"] in docs or p["text"] in texts:
                continue
            texts.add(p["text"])
            docs[p["id"]] = {"id": f"{tag}-{p['id']}", "title": p["title"], "text": p["text"]}
    return list(docs.values())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def every_chunk(kb: tribute.Index, datanet: str, n: int) -> dict[str, tuple[Any, ...]]:
    """All chunks of a datanet with every attribution field (a dense search deep enough to
    return them all)."""
    hits = kb.search("history", k=n + 10, mode="dense", datanets=[datanet])
    assert len(hits) == n, f"a dense search for all {n} chunks returned {len(hits)}"
    return {
        h.chunk_id: (h.doc_id, h.title, h.text, h.content_hash, h.start, h.end, h.contributor, h.datanet)
        for h in hits
    }


def test_ray_ingest_into_postgres_builds_the_same_index_as_a_local_ingest(
    cluster: None, pg_url: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    datanet = f"ray-{tag}"
    docs = passages(tag)
    assert len(docs) >= 300
    half = len(docs) // 2
    # Half as a Ray dataset, half as a JSONL file split by line across the workers.
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps(d) + "\n" for d in docs[half:]))
    first = tray.ingest(ray.data.from_items(docs[:half]), pg_url, datanet=datanet, contributor=ALICE, workers=2, batch_size=32)
    second = tray.ingest(jsonl, pg_url, datanet=datanet, contributor=ALICE, workers=2, batch_size=32)
    assert (first.added, second.added, first.replaced + second.replaced) == (half, len(docs) - half, 0)
    assert len(first.batches_by_worker) == 2, f"both workers should write: {first.batches_by_worker}"

    with tribute.Index.open(tmp_path / "local") as local:
        ref = local.add(docs, datanet=datanet, contributor=ALICE)
        assert ref.added == len(docs)
        assert first.chunks + second.chunks == ref.chunks
        with tribute.Index.open(pg_url) as pg:
            # Chunk ids, content hashes, byte spans, texts and attribution fields: identical.
            assert every_chunk(pg, datanet, ref.chunks) == every_chunk(local, datanet, ref.chunks)
            # Same vectors: the same dense top-k with the same scores.
            for q in ["Who founded the city?", "population of Israel", "the first World Cup", "a river in Europe"]:
                want = local.search(q, k=5, mode="dense", datanets=[datanet])
                got = pg.search(q, k=5, mode="dense", datanets=[datanet])
                assert [h.chunk_id for h in got] == [h.chunk_id for h in want], q
                for g, w in zip(got, want):
                    assert g.dense_score == pytest.approx(w.dense_score, abs=1e-4)

    # Ingesting again writes nothing (idempotent by content hash).
    again = tray.ingest(jsonl, pg_url, datanet=datanet, contributor=ALICE, workers=2)
    assert (again.added, again.replaced, again.unchanged) == (0, 0, len(docs) - half)


def test_ray_ingest_refuses_many_writers_on_a_directory(cluster: None, tmp_path: Path) -> None:
    with pytest.raises(tribute.ConfigError, match="one process"):
        tray.ingest(SAMPLE, tmp_path / "kb", workers=2)
    with pytest.raises(tribute.RequestError, match="no such file"):
        tray.ingest(tmp_path / "missing", tmp_path / "kb")




def test_a_ray_cluster_that_is_down_is_a_config_error(tmp_path: Path) -> None:
    need(ray is not None, "the tribute[ray] extra (ray[data,serve]) is not installed")
    # A fresh interpreter: this one is connected to the test cluster already.
    code = (
        "import sys, tribute, tribute.ray\n"
        "try:\n"
        f"    tribute.ray.ingest({str(SAMPLE)!r}, {str(tmp_path / 'kb')!r}, address='127.0.0.1:{free_port()}')\n"
        "except tribute.ConfigError as e:\n"
        "    print(e); sys.exit(3)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 3, run.stderr[-2000:]
    assert "no Ray cluster answers at 127.0.0.1:" in run.stdout and "ray start --head" in run.stdout
    assert not (tmp_path / "kb").exists(), "nothing may be written"


def test_ray_serve_routes_adapters_and_journals_every_receipt_once(cluster: None, pg_url: str) -> None:
    need((LORA / "smollm2-135m-zephyr-lora").is_dir(), f"the example adapters are required in {LORA}")
    with tribute.Index.open(pg_url) as kb:
        kb.add_files(SAMPLE)
    journal = tribute.Engine(index=pg_url, journal=pg_url, answer_mode="extractive")
    before = {r.id for r, _ in journal.receipts()}

    adapters = {
        "zephyr": LORA / "smollm2-135m-zephyr-lora",
        "caps": LORA / "smollm2-135m-caps-lora",
        # The zephyr weights under a third id: a third adapter to place.
        "zephyr-b": LORA / "smollm2-135m-zephyr-lora",
    }
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    handle = tray.serve(
        pg_url,
        journal=pg_url,
        ledger=LEDGER,
        adapters=adapters,
        num_replicas=2,
        max_adapters_per_replica=2,
        engine_options={"max_tokens": 8, "top_k": 2, "method": "retrieval"},
        ray_actor_options={"num_cpus": 0.5},
    )
    q = {"question": "How much does a commercial Zephyr fleet license cost?"}

    def ask(adapter: str) -> Any:
        return handle.options(multiplexed_model_id=adapter).remote(q)

    # A burst: two requests per adapter, all in flight at once.
    burst = [ask(a) for a in ["zephyr", "caps", "zephyr-b"] * 2]
    replies = [r.result(timeout_s=300) for r in burst]
    # Then each adapter twice in a row: the second goes to a replica that holds it already.
    for a in adapters:
        one = ask(a).result(timeout_s=300)
        two = ask(a).result(timeout_s=300)
        assert not two["loaded"], f"{a} was loaded again on {two['replica']} ({one['replica']} held it)"
        replies += [one, two]
    # And over HTTP, routed by the multiplexing header.
    http = urllib.request.Request(
        f"http://127.0.0.1:{port}/",
        data=json.dumps(q).encode(),
        headers={"content-type": "application/json", "serve_multiplexed_model_id": "caps"},
    )
    with urllib.request.urlopen(http, timeout=300) as resp:
        replies.append(json.loads(resp.read()))

    assert len({r["replica"] for r in replies}) == 2, "both replicas should answer"
    receipts = []
    for r in replies:
        assert [tuple(a) for a in r["answer"]["adapters"]] == [(r["adapter"], 1.0)]
        # `resident` is read when the reply is built: a concurrent request on the same replica
        # may already have evicted this adapter (LRU), so only the bound is checked here.
        assert len(r["resident"]) <= 2, r
        assert r["receipt"] is not None, r["answer"]
        receipts.append(tribute.Receipt.from_json(r["receipt"], LEDGER))
    assert all(rc.verify(LEDGER).lower() == PAYER.lower() for rc in receipts)
    ids = [rc.id for rc in receipts]
    assert len(set(ids)) == len(ids) == len(replies)

    # The shared journal holds exactly these receipts, byte for byte, each once, pending.
    after = journal.receipts()
    new = [(r, s) for r, s in after if r.id not in before]
    assert sorted(r.id for r, _ in new) == sorted(ids)
    by_id = {rc.id: rc for rc in receipts}
    for r, state in new:
        assert state == "pending" and r == by_id[r.id] and r.to_json() == by_id[r.id].to_json()
    journal.close()
