"""The LanceDB side of `index/benches/vs_lancedb/run.sh`: one pass over one BEIR set.

The same all-MiniLM-L6-v2 ONNX model through plain Python onnxruntime with 2 intra-op
threads (tokenizers, truncation at 256, mean pooling, L2 normalisation), LanceDB for
storage, full-text (FTS) and hybrid (vector + FTS, RRF) search, top 10. Prints one JSON
line: ingest seconds and per-query latencies in ms (embedding alone, hybrid including the
embedding, hybrid alone, FTS).

    CORPUS_LIMIT=N QUERY_LIMIT=N python lancedb_side.py MODEL_DIR BEIR_DIR
"""

import json
import os
import sys
import tempfile
import time

import lancedb
import numpy as np
import onnxruntime as ort
import pyarrow as pa
from tokenizers import Tokenizer


class Embedder:
    def __init__(self, model_dir: str, threads: int = 2) -> None:
        self.tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
        self.tok.enable_truncation(256)
        self.tok.enable_padding(pad_id=0, pad_token="[PAD]")
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        self.sess = ort.InferenceSession(f"{model_dir}/model.onnx", so, providers=["CPUExecutionProvider"])
        self.names = {i.name for i in self.sess.get_inputs()}

    def embed(self, texts: list[str]) -> np.ndarray:
        enc = self.tok.encode_batch(texts)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.names:
            feed["token_type_ids"] = np.zeros_like(ids)
        hidden = self.sess.run(None, feed)[0]
        m = mask[:, :, None].astype(np.float32)
        v = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def ms(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    model_dir, data = sys.argv[1], sys.argv[2]
    corpus_limit = int(os.environ.get("CORPUS_LIMIT") or 0) or None
    query_limit = int(os.environ.get("QUERY_LIMIT") or 0) or None
    corpus = read_jsonl(os.path.join(data, "corpus.jsonl"))[:corpus_limit]
    queries = [q["text"] for q in read_jsonl(os.path.join(data, "queries.jsonl"))][:query_limit]
    emb = Embedder(model_dir)
    with tempfile.TemporaryDirectory(prefix="lancedb-bench-") as tmp:
        start = time.perf_counter()
        texts = [((d.get("title") or "").strip() + "\n" + d["text"]).strip() for d in corpus]
        vectors = np.concatenate([emb.embed(texts[i : i + 32]) for i in range(0, len(texts), 32)])
        table = pa.table(
            {
                "id": [str(d["_id"]) for d in corpus],
                "text": texts,
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.astype(np.float32).ravel()), vectors.shape[1]),
            }
        )
        tbl = lancedb.connect(tmp).create_table("docs", data=table)
        try:
            from lancedb.index import FTS

            tbl.create_index("text", config=FTS())
        except (ImportError, TypeError):
            tbl.create_fts_index("text")
        ingest_s = time.perf_counter() - start

        for q in queries[:5]:  # warm up
            tbl.search(query_type="hybrid").vector(emb.embed([q])[0]).text(q).limit(10).to_list()
            tbl.search(q, query_type="fts").limit(10).to_list()
        out = {"side": "lancedb", "data": os.path.basename(data.rstrip("/")), "ingest_s": ingest_s,
               "embed": [], "hybrid_with_embedding": [], "hybrid": [], "lexical": []}
        for q in queries:
            t = time.perf_counter()
            v = emb.embed([q])[0]
            out["embed"].append(ms(t))
            t = time.perf_counter()
            v = emb.embed([q])[0]
            t2 = time.perf_counter()
            tbl.search(query_type="hybrid").vector(v).text(q).limit(10).to_list()
            out["hybrid_with_embedding"].append(ms(t))
            out["hybrid"].append(ms(t2))
            t = time.perf_counter()
            tbl.search(q, query_type="fts").limit(10).to_list()
            out["lexical"].append(ms(t))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
