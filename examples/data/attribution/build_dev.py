#!/usr/bin/env python3
"""Build the attribution development set from IBM MTRAG (Apache-2.0).

Usage:
    python3 build_dev.py [MTRAG_DIR] [--out OUT_DIR]

MTRAG_DIR defaults to /work/shared/data/mtrag; OUT_DIR defaults to the
directory holding this script. Writes dev.jsonl and dev-small.jsonl
(first 12 examples). Standard library only; the output is deterministic.

See README.md next to this script for the selection rules.
"""

import argparse
import glob
import json
import math
import os
import random
import re
import statistics
import sys
from collections import Counter, defaultdict

SEED = 20240611
MAX_ANSWER_WORDS = 80
MAX_PASSAGE_WORDS = 120
MAX_SUPPORTING = 2
MAX_REFERENCE_PASSAGES = 3  # tasks with more reference passages are skipped
N_SMALL = 12

DOMAINS = ["clapnq", "cloud", "fiqa", "govt"]

# MTRAG-UN tasks (mtragun-human/generation_tasks/reference.jsonl) whose last
# user turn was reviewed by hand. Value None: the turn is used verbatim (it is
# understandable on its own). A string: a minimal standalone rewrite that
# folds in the context from earlier turns (or drops conversational filler).
# Keys are MTRAG task ids.
MTRAGUN_QUESTIONS = {
    "98f69b09": None,
    "6f4948e4": None,
    "3ba28d89": None,
    "51c078e7": None,
    "c81367c6": None,
    "aaf50bd9": None,
    "f00a7896": None,
    "203b3547": None,
    "c5df4eb0": None,
    "76d98d2d": None,
    "855a3cc5": None,
    "f5b5b43a": None,
    "405bb3e0": None,
    "d99477ec": None,
    "4b1bc504": None,
    "99447a3a": None,
    "eb15222a": None,
    "10fda533": None,
    "029f065e": None,
    "2bf732c8": None,
    "515b4ce8": None,
    "2769ec41": None,
    "3e4955e1": None,
    "0cd8fd51": None,
    "2401e121": None,
    "d5fa755f": None,
    "6cde1823": None,
    "1d2d011c": None,
    "604714e7": None,
    "907d09ce": None,
    "ad559061": None,
    "e01f273a": None,
    "33dde7d1": "When was the song 'Grenade' by Bruno Mars released?",
    "d6c46206": "What supplies should I bring for tubing on the Russian River, and what rentals might be available?",
    "11f1e655": "How do I migrate from Discovery v1 to Discovery v2?",
    "bcfda716": "Is the musician Daniel Johnston a visual artist as well?",
    "099f8f4f": "For a containerized app in a Kubernetes cluster, which ports are accessible from the public internet?",
    "3feea5e0": "What supplies kit should I prepare for disasters?",
    "829ec96a": "To whom is an IBM Cloud trial account available?",
    "ecead9d2": "After changing my name in California, can I change my birth and marriage certificate?",
    "59400aea": "How does the Text to Speech service synthesize audio?",
    "c7217f0b": "What is gingival recession?",
    "f733c9e9": 'Do you know when and where "Alexander and the Terrible, Horrible, No Good, Very Bad Day" was published?',
    "acecf297": "How do I pay for Medicare? Can it be paid from my Social Security monthly payments?",
    "91014c2d": "Please tell me some more about Walt Disney the person.",
}

# MTRAG human-evaluation tasks whose standalone rewrite (retrieval_tasks/*_rewrite.jsonl)
# was still not understandable on its own, or whose reference answer does not answer
# the turn. Key: (first 10 chars of conversation id, turn). EXCLUDE drops the task;
# a string replaces the question.
EXCLUDE = object()
MTRAG_HUMAN_QUESTIONS = {
    ("1c041ce47a", 2): EXCLUDE,  # "query definition": answer mixes two products
    ("72ba19c385", 4): EXCLUDE,  # "sprite the sprite of bevarage?": typo turn
    ("72ba19c385", 9): EXCLUDE,  # chit-chat turn, answer is not grounded in a specific claim
    ("4751cd8210", 8): EXCLUDE,  # "That's a complicated book keeping!": statement, not a question
    ("1534a09527", 2): "What is the photography of planes taken in the air, while in flight, called?",
    ("1534a09527", 5): "Besides air-to-air and ground-to-air, are there any other types of aviation photography?",
    ("d5f0e7023a", 3): "Besides the Penobscot River, are there any other important river systems in Maine?",
    ("adf9b1f61c", 3): "Are there different types of charges that I can be charged on IBM Cloud?",
    ("6af5334fbd", 3): "What is the typical down payment amount for a mortgage?",
}

STOP = set(
    """a an the and or but if then else of to in on at by for with from as is are was were be been being
    it its this that these those there here i you he she we they me him her us them my your his our their
    do does did done can could will would shall should may might must not no yes so than too very also
    about into over under more most some any all each other such only own same just what which who whom
    whose when where why how up out off again further once have has had having am s t don doesn didn
    isn aren wasn weren won wouldn shouldn couldn ll re ve d m o y i'm it's let please tell know""".split()
)

WORD = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?")


def words(text):
    return text.split()


def content_tokens(text):
    return [w for w in (m.group(0).lower() for m in WORD.finditer(text)) if w not in STOP and len(w) > 1]


def norm_ws(text):
    return re.sub(r"[ \t\u00a0]+", " ", text).strip()


def domain_of(collection):
    c = collection.lower()
    for key, dom in (("clapnq", "clapnq"), ("ibmcloud", "cloud"), ("cloud", "cloud"), ("fiqa", "fiqa"), ("govt", "govt")):
        if key in c:
            return dom
    raise ValueError(collection)


def doc_key(doc_id):
    """Underlying source document of a passage id (passages of one document share it)."""
    head = doc_id.split("-")[0]
    return head.split("_")[0] if re.match(r"^\d+_", head) else head


def clean_passage(doc_id, title, text):
    """Return (title, list of sentences)."""
    lines = [norm_ws(l) for l in text.replace("\r", "\n").split("\n")]
    lines = [l for l in lines if l]
    title = norm_ws(title or "")
    # Drop leading lines that repeat the title (clapnq/govt texts start with it, govt sometimes twice).
    while title and lines and lines[0] == title:
        lines.pop(0)
    if not title and lines and len(lines) > 1 and len(lines[0].split()) <= 12 and not re.search(r"[.!?]$", lines[0]):
        # Cloud passages start with a heading line: use it as the title.
        title = lines.pop(0)
    sents = []
    for line in lines:
        parts = re.split(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])", line)
        sents.extend(p.strip() for p in parts if p.strip())
    return title, sents


def best_window(sents, target_tokens, max_words=MAX_PASSAGE_WORDS):
    """Contiguous run of sentences (<= max_words words) covering the most target tokens.

    Ties go to the earliest window. A first sentence longer than max_words is cut at a
    word boundary (marked with an ellipsis)."""
    target = set(target_tokens)
    lens = [len(words(s)) for s in sents]
    best = None
    for i in range(len(sents)):
        total, j = 0, i
        while j < len(sents) and total + lens[j] <= max_words:
            total += lens[j]
            j += 1
        if j == i:  # single over-long sentence
            chunk = " ".join(words(sents[i])[:max_words]) + " …"
        else:
            chunk = " ".join(sents[i:j])
        score = len(target & set(content_tokens(chunk)))
        if best is None or score > best[0]:
            best = (score, chunk)
        if j >= len(sents):
            break
    return best[1] if best else ""


def recall(target_tokens, text):
    t = set(target_tokens)
    return len(t & set(content_tokens(text))) / max(1, len(t))


def load_passages_and_tasks(root):
    """Return (passages: id -> dict, tasks: list of dict)."""
    passages = {}
    tasks = []

    def add_passage(pid, title, text, dom, conv):
        p = passages.setdefault(pid, {"id": pid, "title": title, "text": text, "domain": dom, "convs": set()})
        p["convs"].add(conv)

    # 1) MTRAG human evaluation subset: reference answers + human ratings, standalone rewrites
    #    of the last turn from retrieval_tasks/*/*_rewrite.jsonl.
    ev_path = os.path.join(root, "mtrag-human/evaluations/reference_subset_with_human_evaluations.json")
    ev = json.load(open(ev_path, encoding="utf-8"))
    docs = {d["document_id"]: d for d in ev["documents"]}
    rewrites = {}
    for f in sorted(glob.glob(os.path.join(root, "mtrag-human/retrieval_tasks/*/*_rewrite.jsonl"))):
        for line in open(f, encoding="utf-8"):
            o = json.loads(line)
            rewrites[o["_id"]] = re.sub(r"^\|user\|:\s*", "", o["text"]).strip()
    faith = {}
    for e in ev["evaluations"]:
        if e["model_id"] == "reference":
            vals = [int(v["value"]) for v in e["annotations"].get("faithfulness", {}).values()]
            if vals:
                faith[e["task_id"]] = statistics.median(vals)
    for t in ev["tasks"]:
        dom = domain_of(t["Collection"])
        conv = t["task_id"].split("<::>")[0]
        ctx_ids = [c["document_id"] for c in t["contexts"]]
        for pid in ctx_ids:
            d = docs[pid]
            add_passage(pid, d.get("title"), d["text"], dom, conv)
        last_user = [x["text"] for x in t["input"] if x["speaker"] == "user"][-1].strip()
        override = MTRAG_HUMAN_QUESTIONS.get((conv[:10], int(t["Turn"])))
        if override is EXCLUDE:
            question, qsrc = None, None
        elif override is not None:
            question, qsrc = override, "manual_rewrite"
        elif t["Turn"] == "1":
            question, qsrc = last_user, "last_turn"
        elif t["task_id"] in rewrites:
            question, qsrc = rewrites[t["task_id"]], "mtrag_rewrite"
        else:
            question, qsrc = None, None
        tasks.append({
            "source": "mtrag-human",
            "task_id": t["task_id"], "conv": conv, "turn": int(t["Turn"]), "domain": dom,
            "answerable": t["Answerability"] == ["ANSWERABLE"],
            "faithfulness": faith.get(t["task_id"]),
            "question": question, "question_source": qsrc,
            "answer": (t["targets"][0]["text"] if t["targets"] else "").strip(),
            "contexts": ctx_ids,
        })

    # 2) MTRAG-UN reference generation tasks (reference passages with text inline).
    un_path = os.path.join(root, "mtragun-human/generation_tasks/reference.jsonl")
    for line in open(un_path, encoding="utf-8"):
        r = json.loads(line)
        dom = domain_of(r["Collection"])
        conv = r["conversation_id"]
        ctx_ids = []
        for c in r["contexts"]:
            add_passage(c["document_id"], c.get("title"), c["text"], dom, conv)
            ctx_ids.append(c["document_id"])
        short = r["task_id"][:8]
        last_user = [x["text"] for x in r["input"] if x["speaker"] == "user"][-1].strip()
        question, qsrc = None, None
        if short in MTRAGUN_QUESTIONS:
            override = MTRAGUN_QUESTIONS[short]
            question, qsrc = (last_user, "last_turn") if override is None else (override, "manual_rewrite")
        tasks.append({
            "source": "mtragun-human",
            "task_id": r["task_id"], "conv": conv, "turn": int(r["turn"]), "domain": dom,
            "answerable": r["answerability"] == ["ANSWERABLE"],
            "faithfulness": None,
            "question": question, "question_source": qsrc,
            "answer": (r["targets"][0]["text"] if r["targets"] else "").strip(),
            "contexts": ctx_ids,
        })
    return passages, tasks


def select(tasks):
    keep, seen_q = [], set()
    for t in sorted(tasks, key=lambda t: (t["source"] != "mtrag-human", t["task_id"])):
        if not t["answerable"] or not t["question"] or not t["answer"]:
            continue
        if not 1 <= len(t["contexts"]) <= MAX_REFERENCE_PASSAGES:
            continue
        if len(words(t["answer"])) > MAX_ANSWER_WORDS:
            continue
        if t["faithfulness"] is not None and t["faithfulness"] < 3:
            continue
        qn = " ".join(content_tokens(t["question"]))
        if qn in seen_q:  # same question in both releases
            continue
        seen_q.add(qn)
        keep.append(t)
    return keep


class Tfidf:
    def __init__(self, docs):
        self.df = Counter()
        for d in docs:
            self.df.update(set(content_tokens(d)))
        self.n = len(docs)

    def vec(self, text):
        tf = Counter(content_tokens(text))
        v = {w: (1 + math.log(c)) * math.log((1 + self.n) / (1 + self.df[w])) for w, c in tf.items()}
        norm = math.sqrt(sum(x * x for x in v.values())) or 1.0
        return {w: x / norm for w, x in v.items()}

    @staticmethod
    def cos(a, b):
        if len(a) > len(b):
            a, b = b, a
        return sum(x * b.get(w, 0.0) for w, x in a.items())


def build_examples(root):
    passages, tasks = load_passages_and_tasks(root)
    chosen = select(tasks)
    cleaned = {pid: clean_passage(pid, p["title"], p["text"]) for pid, p in passages.items()}
    by_domain = defaultdict(list)
    for pid in sorted(passages):
        by_domain[passages[pid]["domain"]].append(pid)
    tfidf = {dom: Tfidf([" ".join(cleaned[pid][1]) for pid in pids]) for dom, pids in by_domain.items()}
    # conversations that share a passage are treated as one topic cluster for distractor exclusion
    conv_docs = defaultdict(set)
    for pid, p in passages.items():
        for c in p["convs"]:
            conv_docs[c].add(doc_key(pid))

    examples = []
    for t in chosen:
        dom = t["domain"]
        ex_id = "mtrag-%s-%s-t%d" % (dom, t["conv"][:10], t["turn"])
        rng = random.Random("%d:%s" % (SEED, ex_id))
        ans_tok = content_tokens(t["answer"])
        q_tok = content_tokens(t["question"])

        # supporting passages: the reference passages (top-2 by answer overlap if there are 3)
        refs = sorted(t["contexts"], key=lambda pid: (-recall(ans_tok, " ".join(cleaned[pid][1])), t["contexts"].index(pid)))
        sup_ids = refs[:MAX_SUPPORTING]
        sup = []
        for pid in sup_ids:
            title, sents = cleaned[pid]
            text = best_window(sents, ans_tok + q_tok)
            sup.append({"id": pid, "title": title, "text": text, "supporting": True})
        if any(not p["text"] for p in sup):
            continue
        min_sup_recall = min(recall(ans_tok, p["text"]) for p in sup)

        # distractors: same-domain reference passages of OTHER conversations
        banned_docs = {doc_key(pid) for pid in t["contexts"]} | conv_docs[t["conv"]]
        cands = []
        for pid in by_domain[dom]:
            p = passages[pid]
            if t["conv"] in p["convs"] or doc_key(pid) in banned_docs or pid in t["contexts"]:
                continue
            cands.append(pid)
        qv = tfidf[dom].vec(t["question"])
        scored = sorted(cands, key=lambda pid: (-Tfidf.cos(qv, tfidf[dom].vec(" ".join(cleaned[pid][1]))), pid))

        n_total = rng.choice([4, 5, 6])
        n_dis = n_total - len(sup)
        n_hard = (n_dis + 1) // 2
        hard_pool = scored[:8]
        rest_pool = scored[8:]
        picks = rng.sample(hard_pool, min(n_hard, len(hard_pool)))
        rng.shuffle(rest_pool)
        picks += rest_pool
        dis, used_docs = [], set()
        for pid in picks:
            if len(dis) >= n_dis:
                break
            if doc_key(pid) in used_docs:
                continue
            title, sents = cleaned[pid]
            text = best_window(sents, q_tok)
            if not text or len(words(text)) < 15:
                continue
            # a distractor must not look like it could support the answer
            if recall(ans_tok, text) >= min(0.5, min_sup_recall):
                continue
            used_docs.add(doc_key(pid))
            dis.append({"id": pid, "title": title, "text": text, "supporting": False})
        if len(dis) < 2:
            continue
        ps = sup + dis
        rng.shuffle(ps)
        examples.append({
            "id": ex_id,
            "domain": dom,
            "source": "%s:%s" % (t["source"], t["task_id"]),
            "question_source": t["question_source"],
            "question": t["question"],
            "answer": t["answer"],
            "passages": ps,
        })

    # deterministic order: shuffle within each domain, then round-robin across domains
    per = defaultdict(list)
    for e in examples:
        per[e["domain"]].append(e)
    order_rng = random.Random(SEED)
    for dom in DOMAINS:
        per[dom].sort(key=lambda e: e["id"])
        order_rng.shuffle(per[dom])
    out = []
    while any(per[d] for d in DOMAINS):
        for d in DOMAINS:
            if per[d]:
                out.append(per[d].pop(0))
    return out


def validate(examples):
    ids = set()
    for e in examples:
        assert e["id"] not in ids, e["id"]
        ids.add(e["id"])
        assert e["question"].strip() and e["answer"].strip()
        ps = e["passages"]
        assert 4 <= len(ps) <= 6, e["id"]
        assert len({p["id"] for p in ps}) == len(ps), e["id"]
        n_sup = sum(p["supporting"] for p in ps)
        assert 1 <= n_sup <= MAX_SUPPORTING and len(ps) - n_sup >= 2, e["id"]
        assert all(p["text"].strip() for p in ps), e["id"]
        total = len(words(e["question"])) + len(words(e["answer"])) + sum(len(words(p["title"] + " " + p["text"])) for p in ps)
        assert total < 1200, (e["id"], total)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mtrag_dir", nargs="?", default="/work/shared/data/mtrag")
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = ap.parse_args()
    examples = build_examples(args.mtrag_dir)
    validate(examples)
    for name, rows in (("dev.jsonl", examples), ("dev-small.jsonl", examples[:N_SMALL])):
        with open(os.path.join(args.out, name), "w", encoding="utf-8") as f:
            for e in rows:
                f.write(json.dumps(e, ensure_ascii=False) + "\n")
    c = Counter(e["domain"] for e in examples)
    print("wrote %d examples (%s); dev-small: %d" % (len(examples), ", ".join("%s=%d" % (d, c[d]) for d in DOMAINS), min(N_SMALL, len(examples))), file=sys.stderr)


if __name__ == "__main__":
    main()
