"""Screens system prompts and source layouts for retrieval-augmented answers, fast.

A reimplementation, in Python with ONNX Runtime, of what `tribute eval qa --gold` does to
produce an answer (not of its attribution): the example's passages ranked by cosine
similarity to the question with all-MiniLM-L6-v2, laid out as `RagPrompt` does, SmolLM2's
chat template, greedy decoding with the repetition guard (`no_repeat_ngram = 4`,
`repeat_stop = 2`), the SQuAD-normalised F1 / contains-answer / recall of `tribute::qa`.
It skips the attribution pass, so it runs faster than the engine; use it to rank
candidates, then measure the finalists with `tribute eval qa` (docs/QUALITY.md). On the
first 24 dev examples its answers scored F1 0.256 (system prompt "") and 0.181 (the
default prompt) where the engine scored 0.258 and 0.178.

    python scripts/qa_prompt_screen.py --system "" --start 0 --end 24
    python scripts/qa_prompt_screen.py --system "Answer …" --sample   # the sample datanet's two questions

Runs with the exporter venv ($TRIBUTE_HOME/venv: numpy, onnxruntime, tokenizers).
"""

import argparse
import json
import os
import string
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

HOME = Path(os.environ.get("TRIBUTE_HOME", Path.home() / ".cache/tribute"))
REPO = Path(__file__).resolve().parent.parent
EOS = 2
# SmolLM2's chat template inserts this system message when the messages have none.
SMOLLM_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


class Model:
    def __init__(self) -> None:
        o = ort.SessionOptions()
        o.log_severity_level = 3
        lm_dir = HOME / "models/SmolLM2-135M-Instruct"
        em_dir = HOME / "models/all-MiniLM-L6-v2"
        self.lm = ort.InferenceSession(str(lm_dir / "model.onnx"), o, providers=["CPUExecutionProvider"])
        self.tok = Tokenizer.from_file(str(lm_dir / "tokenizer.json"))
        self.em = ort.InferenceSession(str(em_dir / "model.onnx"), o, providers=["CPUExecutionProvider"])
        self.etok = Tokenizer.from_file(str(em_dir / "tokenizer.json"))
        self.etok.no_padding()
        self.etok.enable_truncation(256)
        self.layers = sum(1 for i in self.lm.get_inputs() if i.name.endswith(".key"))
        self.em_inputs = {i.name for i in self.em.get_inputs()}

    def embed(self, text: str) -> np.ndarray:
        ids = np.array([self.etok.encode(text).ids], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in self.em_inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        v = self.em.run(None, feed)[0][0].mean(0)
        return v / np.linalg.norm(v)

    def generate(self, prompt: str, max_tokens: int, colon: bool) -> tuple[str, int]:
        """Greedy with the repetition guard; `colon`: no end-of-sequence right after an
        answer that so far ends with a colon (announces an answer it has not given)."""
        ids = self.tok.encode(prompt, add_special_tokens=False).ids
        past = {}
        for i in range(self.layers):
            for kv in ("key", "value"):
                past[f"past_key_values.{i}.{kv}"] = np.zeros((1, 3, 0, 64), np.float32)
        gen: list[int] = []
        blocked, cur, pos = 0, ids, 0
        for _ in range(max_tokens):
            feed = {
                "input_ids": np.array([cur], np.int64),
                "attention_mask": np.ones((1, pos + len(cur)), np.int64),
                "position_ids": np.arange(pos, pos + len(cur), dtype=np.int64)[None],
                **past,
            }
            out = self.lm.run(None, feed)
            logits = out[0][0, -1].astype(np.float32).copy()
            for i in range(self.layers):
                past[f"past_key_values.{i}.key"] = out[1 + 2 * i]
                past[f"past_key_values.{i}.value"] = out[2 + 2 * i]
            pos += len(cur)
            t = None
            if len(gen) >= 3:
                prefix = gen[-3:]
                banned = {gen[j + 3] for j in range(len(gen) - 3) if gen[j : j + 3] == prefix}
                if banned:
                    first = int(np.argmax(logits))
                    logits[list(banned)] = -np.inf
                    if first in banned:
                        blocked += 1
                        if blocked >= 2:
                            t = EOS
            if t is None:
                t = int(np.argmax(logits))
                if t == EOS and colon and self.tok.decode(gen).rstrip().endswith(":"):
                    logits[EOS] = -np.inf
                    t = int(np.argmax(logits))
            if t == EOS:
                break
            gen.append(t)
            cur = [t]
        return self.tok.decode(gen, skip_special_tokens=True), len(gen)


def user_message(question: str, sources: list[tuple[str, str]]) -> str:
    """`RagPrompt`'s layout (core/src/rag.rs)."""
    c = "Sources:\n"
    for i, (title, text) in enumerate(sources):
        c += f"[{i + 1}] " + (title.strip() + "\n" if title.strip() else "") + text.strip() + "\n\n"
    return c + "Question: " + question.strip()


def chat(system: str, user: str) -> str:
    s = system or SMOLLM_DEFAULT_SYSTEM
    return f"<|im_start|>system\n{s}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


def normalize(s: str) -> list[str]:
    s = "".join(" " if c in string.punctuation or c in "\u2018\u2019\u201c\u201d\u2013\u2014\u2026" else c for c in s.lower())
    return [w for w in s.split() if w not in ("a", "an", "the")]


def scores(pred: str, gold: str) -> tuple[float, float, float]:
    p, g = normalize(pred), normalize(gold)
    common = sum((Counter(p) & Counter(g)).values())
    recall = common / len(g) if g else 1.0
    f1 = 0.0 if not p or not g or not common else 2 * common / (len(p) + len(g))
    contains = float(f" {' '.join(g)} " in f" {' '.join(p)} " or recall >= 0.5)
    return f1, contains, recall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--system", default="", help='system prompt ("": the chat template\'s own)')
    ap.add_argument("--data", default=str(REPO / "examples/data/attribution/dev.jsonl"))
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--end", type=int, default=24)
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--colon", action="store_true", help="no end-of-sequence right after a colon")
    ap.add_argument("--sample", action="store_true", help="the sample datanet's two questions (top 3)")
    a = ap.parse_args()
    m = Model()
    if a.sample:
        docs = {}
        for f in ("alice", "bob"):
            for line in open(REPO / f"examples/data/zephyr/{f}.jsonl"):
                d = json.loads(line)
                docs[d["id"]] = (d["title"], d["text"])
        # The hybrid top 3 of each question (`tribute search --k 3`).
        for q, order in [
            ("At what gust speed should Zephyr pilots land?", ["gust-field-notes", "zephyr-intro", "zephyr-install"]),
            ("How many times per second does the Zephyr flight controller correct the attitude?",
             ["zephyr-intro", "gust-field-notes", "zephyr-install"]),
        ]:
            text, _ = m.generate(chat(a.system, user_message(q, [docs[i] for i in order])), 48, a.colon)
            print(json.dumps({"question": q, "answer": text}))
        return
    rows = [json.loads(line) for line in open(a.data)][a.start : a.end]
    total = np.zeros(3)
    for k, ex in enumerate(rows):
        qv = m.embed(ex["question"])
        ranked = sorted(ex["passages"], key=lambda p: -float(m.embed((p.get("title") or "") + "\n" + p["text"]) @ qv))
        prompt = chat(a.system, user_message(ex["question"], [(p.get("title") or "", p["text"]) for p in ranked]))
        t = time.time()
        text, n = m.generate(prompt, a.max_tokens, a.colon)
        s = scores(text, ex["answer"])
        total += s
        print(json.dumps({"i": a.start + k, "id": ex["id"], "f1": round(s[0], 3), "contains": s[1],
                          "tokens": n, "seconds": round(time.time() - t, 1), "answer": text}), flush=True)
    n = max(len(rows), 1)
    print(f"examples {len(rows)}  F1 {total[0] / n:.3f}  contains {total[1] / n:.3f}  recall {total[2] / n:.3f}")


if __name__ == "__main__":
    main()
