"""The peer for `tribute-index`'s ingest benchmark: a plain Python ONNX Runtime loop.

Reads a BEIR corpus (or JSONL of {"text"}), embeds `title + "\\n" + text` with the same
all-MiniLM-L6-v2 ONNX model in batches of 32 in file order (tokenizers, padding to the
longest in the batch, truncation at 256, mean pooling, L2 normalisation), and prints
{"docs", "seconds", "docs_per_s"} as JSON.

    python index/benches/python_ingest_baseline.py MODEL_DIR CORPUS.jsonl [LIMIT]
"""

import json
import sys
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


def main() -> None:
    model_dir, corpus = sys.argv[1], sys.argv[2]
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else None
    texts = []
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            d = json.loads(line)
            t = (d.get("title") or "").strip()
            texts.append((t + "\n" + d["text"]) if t else d["text"])
            if limit and len(texts) >= limit:
                break
    tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    tok.enable_truncation(256)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    sess = ort.InferenceSession(f"{model_dir}/model.onnx", providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    start = time.perf_counter()
    out = []
    for i in range(0, len(texts), 32):
        enc = tok.encode_batch(texts[i : i + 32])
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in names:
            feed["token_type_ids"] = np.zeros_like(ids)
        hidden = sess.run(None, feed)[0]
        m = mask[:, :, None].astype(np.float32)
        v = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        out.append(v / np.linalg.norm(v, axis=1, keepdims=True))
    seconds = time.perf_counter() - start
    print(json.dumps({"docs": len(texts), "seconds": round(seconds, 3), "docs_per_s": round(len(texts) / seconds, 1)}))


if __name__ == "__main__":
    main()
