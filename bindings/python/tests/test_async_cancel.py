"""Async streaming and retrieval, cancellation (Ctrl-C, asyncio cancellation, closing a
stream) and the package's tokio runtime across `fork()`."""

from __future__ import annotations

import _thread
import asyncio
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

import tribute
from conftest import GUST_Q, KEY0, LEDGER, PAYER, PRICING_Q, SAMPLE


def journaled(engine: tribute.Engine) -> int:
    return engine.receipt_stats()["receipts"]


@pytest.fixture()
def sigint() -> Iterator[None]:
    """Python's own SIGINT handler: a process started in the background (`cmd &`) inherits
    SIGINT ignored, and then `_thread.interrupt_main` (a simulated Ctrl-C) does nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_async_for_streams_pieces_then_the_answer(engine: tribute.Engine) -> None:
    async def main() -> tuple[list[str], tribute.AskStream, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        t = asyncio.ensure_future(ticker())
        pieces = []
        async with engine.stream_async(GUST_Q, top_k=3) as stream:
            assert "pending" in repr(stream)
            async for piece in stream:
                pieces.append(piece)
        t.cancel()
        return pieces, stream, ticks

    pieces, stream, ticks = asyncio.run(main())
    assert ticks > 5, "the event loop was blocked while streaming"
    answer = stream.answer
    assert answer is not None and len(pieces) > 1
    assert "".join(pieces).strip() == answer.text.strip()
    assert answer.citations[0].doc_id == "gust-field-notes"
    assert answer.receipt is not None and answer.receipt.verify() == PAYER
    # Greedy: the same text as the blocking stream.
    assert engine.ask(GUST_Q, top_k=3).text == answer.text


def test_async_stream_errors_arrive_on_the_first_step(engine: tribute.Engine) -> None:
    async def main() -> None:
        stream = engine.stream_async("   ")
        with pytest.raises(tribute.RequestError, match="empty"):
            await stream.__anext__()
        with pytest.raises(StopAsyncIteration):
            await stream.__anext__()

    asyncio.run(main())


def test_retrieve_async(engine: tribute.Engine) -> None:
    r = asyncio.run(engine.retrieve_async(PRICING_Q, 3))
    assert r.hits[0].doc_id == "zephyr-pricing"
    assert r.receipt is not None and r.receipt.verify() == PAYER


def test_cancelled_ask_async_stops_and_signs_nothing(engine: tribute.Engine) -> None:
    before = journaled(engine)

    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(engine.ask_async(PRICING_Q, max_tokens=160), 0.3)

    asyncio.run(main())
    # The generator has one session: the next ask waits for the cancelled one to let go.
    answer = engine.ask(PRICING_Q, top_k=2, max_tokens=16)
    assert answer.receipt is not None
    assert journaled(engine) == before + 1, "the cancelled ask was journaled"


def test_ctrl_c_interrupts_an_ask_at_once(engine: tribute.Engine, sigint: None) -> None:
    before = journaled(engine)
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        engine.ask(PRICING_Q, max_tokens=160)
    interrupted_after = time.perf_counter() - start
    timer.join()
    answer = engine.ask(PRICING_Q, top_k=2, max_tokens=16)
    full = answer.usage.total_ms / 1000
    assert answer.receipt is not None and journaled(engine) == before + 1
    # Not a timing test: the interrupted ask must not have run to its end first.
    assert interrupted_after < 0.5 + full, (interrupted_after, full)


def test_ctrl_c_interrupts_a_stream_step(tmp_path: Path, sigint: None) -> None:
    # Without a prompt cache, the first step of `waiting` runs its whole prompt (retrieval,
    # then a prefill of ≈ 300 tokens: ≥ 0.4 s on two cores, longer beside `holder`'s
    # decode) before its first piece: Ctrl-C at 0.1 s lands in that step. (With the cache,
    # a prompt asked before is prefilled from what was kept and the step can end first.)
    kb = tribute.Index.open(tmp_path / "kb")
    kb.add_files(SAMPLE)
    with tribute.Engine(
        index=kb,
        generator=tribute.Generator.load(prompt_cache_mib=0),
        signer=tribute.Signer.from_hex(KEY0),
        ledger=LEDGER,
        journal=tmp_path / "receipts",
        max_tokens=48,
    ) as engine:
        before = journaled(engine)
        holder = engine.stream(GUST_Q, top_k=2)
        assert isinstance(next(holder), str)
        waiting = engine.stream_async(PRICING_Q, max_tokens=160)
        timer = threading.Timer(0.1, _thread.interrupt_main)
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            next(waiting)
        timer.join()
        holder.close()
        # Ctrl-C cancelled the stream: it is over, with no answer, and its row was dropped.
        assert list(waiting) == [] and waiting.answer is None and "closed" in repr(waiting)
        engine.ask(GUST_Q, top_k=2, max_tokens=8)
        assert journaled(engine) == before + 1


def _child_asks(kb_dir: Path) -> int:
    """In a forked child: a fresh engine (ONNX Runtime sessions do not survive a fork) whose
    async calls need the package's tokio runtime."""
    try:
        with tribute.Engine(kb_dir, max_tokens=8) as engine:
            r = asyncio.run(engine.retrieve_async(GUST_Q, 2, sign=False))
            answer = asyncio.run(engine.ask_async(GUST_Q, top_k=2))
            ok = r.hits[0].doc_id == "gust-field-notes" and bool(answer.text)
            return 0 if ok else 3
    except BaseException as e:  # report anything, never return into pytest
        print(f"child failed: {e!r}", file=sys.stderr)
        return 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_the_runtime_survives_fork(engine: tribute.Engine, tmp_path: Path) -> None:
    # The parent's runtime is running (async calls above and here).
    assert asyncio.run(engine.retrieve_async(GUST_Q, 1, sign=False)).hits
    kb_dir = tmp_path / "kb"
    with tribute.Index.open(kb_dir) as kb:
        kb.add_files(SAMPLE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "multi-threaded, use of fork()"
        pid = os.fork()
    if pid == 0:
        os._exit(_child_asks(kb_dir))
    deadline = time.monotonic() + 180
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung (a runtime inherited from the parent?)")
        time.sleep(0.1)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    # And the parent's runtime still works.
    assert asyncio.run(engine.retrieve_async(GUST_Q, 1, sign=False)).hits
