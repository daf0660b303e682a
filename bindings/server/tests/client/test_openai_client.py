"""`tribute serve` through the official `openai` Python client, as an app would use it.

Run by run.sh next to it (which starts the server):
    python test_openai_client.py URL ADMIN_KEY READER_KEY
ADMIN_KEY may read every datanet and the receipts; READER_KEY reads zephyr-docs only.
"""

from __future__ import annotations

import base64
import json
import struct
import sys
import time
import urllib.request
from typing import Any, Callable

import openai

QUESTION = "How many times per second does the Zephyr flight controller correct the attitude?"


def check_citations(tribute: dict[str, Any]) -> None:
    citations = tribute["citations"]
    assert citations, tribute
    assert sum(c["weight_bps"] for c in citations) == 10_000, citations
    for c in citations:
        assert c["chunk_id"].startswith(c["doc_id"] + "#"), c
        assert c["contributor"].startswith("0x") and c["datanet"], c
    assert tribute["receipt_id"].startswith("0x") and len(tribute["receipt_id"]) == 66, tribute


def receipt(url: str, key: str, receipt_id: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{url}/v1/receipts/{receipt_id}", headers={"Authorization": f"Bearer {key}"}
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.load(r)


def test_models(client: openai.OpenAI, base: str) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids[0] == base and f"{base}:zephyr" in ids, ids


def test_chat(client: openai.OpenAI, base: str, url: str, key: str) -> None:
    r = client.chat.completions.create(
        model=base,
        messages=[
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": QUESTION},
        ],
        max_tokens=16,
        temperature=0,
        extra_body={"top_k": 3},
    )
    raw = r.to_dict()
    message = raw["choices"][0]["message"]
    assert message["role"] == "assistant" and message["content"].strip(), raw
    assert r.usage is not None and 1 <= r.usage.completion_tokens <= 16, r.usage
    tribute = raw["tribute"]
    check_citations(tribute)
    assert any(c["doc_id"] == "zephyr-intro" for c in tribute["citations"]), tribute
    content = message["content"]
    for a in message["annotations"]:
        marker = a["tribute_citation"]["marker"]
        assert content[a["start_index"] : a["end_index"]] == f"[{marker}]", (a, content)
    assert r.id == "chatcmpl-" + tribute["receipt_id"][2:]
    journaled = receipt(url, key, tribute["receipt_id"])
    assert journaled["verified"] is True and journaled["state"]["state"] == "pending", journaled


def test_stream(client: openai.OpenAI, base: str, url: str, key: str) -> None:
    stream = client.chat.completions.create(
        model=f"{base}:zephyr",
        messages=[{"role": "user", "content": "How long does a full charge of the Zephyr battery take?"}],
        max_tokens=10,
        stream=True,
    )
    text, last = "", None
    for chunk in stream:
        raw = chunk.to_dict()
        if "tribute" in raw:
            last = raw
        else:
            text += chunk.choices[0].delta.content or ""
    assert text.strip(), "no streamed text"
    assert last is not None, "no final event with citations"
    assert last["choices"][0]["finish_reason"] in ("stop", "length"), last
    check_citations(last["tribute"])
    assert receipt(url, key, last["tribute"]["receipt_id"])["verified"] is True


def test_embeddings(client: openai.OpenAI, embedder: str) -> None:
    # The client asks for base64 by default and decodes it.
    r = client.embeddings.create(model=embedder, input=["how long does a full charge take?", "fee"])
    assert [len(d.embedding) for d in r.data] == [384, 384], r
    norm = sum(x * x for x in r.data[0].embedding) ** 0.5
    assert abs(norm - 1.0) < 1e-3, norm
    raw = client.embeddings.create(model=embedder, input="fee", encoding_format="float")
    decoded = r.data[1].embedding
    assert max(abs(a - b) for a, b in zip(raw.data[0].embedding, decoded)) < 1e-6
    # Asked for explicitly, the base64 comes back as it is: little-endian f32s, as OpenAI's.
    b64 = client.embeddings.create(model=embedder, input="fee", encoding_format="base64")
    payload: Any = b64.data[0].embedding
    assert isinstance(payload, str), payload
    floats = struct.unpack("<384f", base64.b64decode(payload))
    assert abs(floats[0] - decoded[0]) < 1e-6


def expect(error: type[openai.APIStatusError], status: int, code: str, call: Callable[[], Any]) -> None:
    try:
        call()
    except error as e:
        assert e.status_code == status, (e.status_code, e.body)
        assert e.code == code, e.body
        return
    raise AssertionError(f"expected {error.__name__}")


def test_errors(client: openai.OpenAI, reader: openai.OpenAI, wrong: openai.OpenAI, base: str) -> None:
    user = [{"role": "user", "content": QUESTION}]
    expect(openai.AuthenticationError, 401, "invalid_api_key", lambda: list(wrong.models.list()))
    expect(
        openai.PermissionDeniedError,
        403,
        "insufficient_scope",
        lambda: reader.chat.completions.create(
            model=base, messages=user, max_tokens=2, extra_body={"datanets": ["pilot-notes"]}
        ),
    )
    expect(
        openai.NotFoundError,
        404,
        "model_not_found",
        lambda: client.chat.completions.create(model="gpt-4o", messages=user, max_tokens=2),
    )
    expect(
        openai.BadRequestError,
        400,
        "invalid_request",
        lambda: client.chat.completions.create(model=base, messages=user, max_tokens=2, n=2),
    )
    expect(
        openai.BadRequestError,
        400,
        "invalid_request",
        lambda: client.chat.completions.create(model=base, messages=user, max_tokens=2, stop=["."]),
    )
    expect(
        openai.BadRequestError,
        400,
        "invalid_request",
        lambda: client.chat.completions.create(
            model=base, messages=[{"role": "system", "content": "hi"}], max_tokens=2
        ),
    )


def main() -> None:
    url, admin_key, reader_key = sys.argv[1:4]
    health = json.load(urllib.request.urlopen(f"{url}/healthz", timeout=30))
    base, embedder = health["model"], health["embedder"]
    options = {"base_url": f"{url}/v1", "max_retries": 0, "timeout": 300}
    client = openai.OpenAI(api_key=admin_key, **options)
    reader = openai.OpenAI(api_key=reader_key, **options)
    wrong = openai.OpenAI(api_key="tk-not-a-key", **options)
    tests: list[tuple[str, Callable[[], None]]] = [
        ("models", lambda: test_models(client, base)),
        ("chat", lambda: test_chat(client, base, url, admin_key)),
        ("stream", lambda: test_stream(client, base, url, admin_key)),
        ("embeddings", lambda: test_embeddings(client, embedder)),
        ("errors", lambda: test_errors(client, reader, wrong, base)),
    ]
    for name, test in tests:
        started = time.monotonic()
        test()
        print(f"openai {openai.__version__}: {name} ok ({time.monotonic() - started:.1f} s)")


if __name__ == "__main__":
    main()
