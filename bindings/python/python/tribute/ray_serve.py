"""Serving an Engine with Ray Serve: `tribute.ray.deployment` / `tribute.ray.serve` (see
`tribute.ray`).

Each replica loads the model once and holds at most `max_adapters_per_replica` LoRA
adapters, managed by `@serve.multiplexed`: a request names its adapter by the multiplexed
model id (`handle.options(multiplexed_model_id="legal")`, or the HTTP header
`serve_multiplexed_model_id: legal`), Ray routes it to a replica that already holds that
adapter when one can take it, and a replica that must load another evicts its least
recently used one. Answers, citations and receipts are the Rust engine's; with
`journal="postgres://…"` every replica journals into one shared receipt journal, which
settlers then settle (`tribute receipts settle --journal postgres://…`).
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Mapping
from typing import Any, Optional, Union

from ray import serve as ray_serve

from ._native import Answer, Engine, Generator, RequestError, Signer
from .ray_ingest import connect

__all__ = ["deployment", "serve"]

_StrPath = Union[str, "os.PathLike[str]"]

#: Per-request options a caller may set (the rest are the deployment's).
_ASK_OPTIONS = {"top_k", "max_tokens", "method", "mode", "datanets", "temperature", "seed", "fee"}


class _Resident:
    """An adapter a replica holds: what the multiplexed loader returns. Ray calls
    `__del__` when it evicts the adapter; the replica then unregisters it (once no ask
    still uses it)."""

    def __init__(self, replica: _EngineReplica, adapter_id: str) -> None:
        self.adapter_id = adapter_id
        self._replica: Optional[_EngineReplica] = replica

    def __del__(self) -> None:
        replica, self._replica = self._replica, None
        if replica is not None:
            replica._evicted(self)


class _EngineReplica:
    """One replica: a Generator with the adapters Ray multiplexes onto it, and an Engine
    over the shared knowledge base and journal."""

    def __init__(
        self,
        kb: str,
        adapters: Mapping[str, str],
        journal: Optional[str],
        ledger: Any,
        key_env: Optional[str],
        model: Optional[str],
        engine_options: Mapping[str, Any],
    ) -> None:
        self._adapters = dict(adapters)
        self._generator = Generator.load(model)
        signer = Signer.from_env(key_env) if key_env else None
        self._engine = Engine(
            index=kb,
            generator=self._generator,
            signer=signer,
            ledger=ledger,
            journal=journal,
            **engine_options,
        )
        self._lock = threading.Lock()
        self._resident: dict[str, _Resident] = {}
        self._inflight: dict[str, int] = {}
        self._loads: dict[str, int] = {}
        self._evictions = 0
        self._replica = f"{os.uname().nodename}:{os.getpid()}"

    def _load(self, adapter_id: str) -> _Resident:
        """Registers `adapter_id` with the generator (the multiplexed loader's work)."""
        path = self._adapters.get(adapter_id)
        if path is None:
            raise RequestError(
                f"unknown adapter {adapter_id!r}; this deployment serves {sorted(self._adapters)}"
            )
        with self._lock:
            if adapter_id not in self._generator.adapters:
                self._generator.add_adapter(adapter_id, path)
            resident = _Resident(self, adapter_id)
            self._resident[adapter_id] = resident
            self._loads[adapter_id] = self._loads.get(adapter_id, 0) + 1
        return resident

    def _evicted(self, resident: _Resident) -> None:
        with self._lock:
            if self._resident.get(resident.adapter_id) is not resident:
                return  # an older load of an adapter loaded again since
            del self._resident[resident.adapter_id]
            self._evictions += 1
            if not self._inflight.get(resident.adapter_id):
                self._generator.remove_adapter(resident.adapter_id)

    def _begin(self, adapter_id: str) -> None:
        with self._lock:
            # Evicted between the loader's return and here: use it once more.
            if adapter_id not in self._generator.adapters:
                self._generator.add_adapter(adapter_id, self._adapters[adapter_id])
            self._inflight[adapter_id] = self._inflight.get(adapter_id, 0) + 1

    def _end(self, adapter_id: str) -> None:
        with self._lock:
            self._inflight[adapter_id] -= 1
            if not self._inflight[adapter_id] and adapter_id not in self._resident:
                self._generator.remove_adapter(adapter_id)

    async def _answer(self, request: Any, resident: Any) -> dict[str, Any]:
        # A Starlette request is itself a Mapping (over the ASGI scope): test for the body reader.
        body: Any = await request.json() if hasattr(request, "json") else request
        if not isinstance(body, Mapping) or not isinstance(body.get("question"), str):
            raise RequestError('the request must be a JSON object with a "question" string')
        unknown = set(body) - _ASK_OPTIONS - {"question"}
        if unknown:
            raise RequestError(f"unknown request fields {sorted(unknown)}; allowed: {sorted(_ASK_OPTIONS)}")
        options = {k: v for k, v in body.items() if k in _ASK_OPTIONS}
        adapter_id = ray_serve.get_multiplexed_model_id()
        loads = self._loads.get(adapter_id, 0)
        if adapter_id:
            await resident(adapter_id)
            self._begin(adapter_id)
            options["adapters"] = {adapter_id: 1.0}
        try:
            ask = functools.partial(self._engine.ask, body["question"], **options)
            answer: Answer = await asyncio.get_running_loop().run_in_executor(None, ask)
        finally:
            if adapter_id:
                self._end(adapter_id)
        receipt = answer.receipt
        return {
            "answer": answer.to_dict(),
            "receipt": None if receipt is None else receipt.to_json(),
            "adapter": adapter_id or None,
            "replica": self._replica,
            "resident": sorted(self._resident),
            "loaded": self._loads.get(adapter_id, 0) != loads,
        }

    def stats(self) -> dict[str, Any]:
        """This replica's adapters: resident (Ray's view), registered with the generator,
        loads by adapter and evictions so far."""
        with self._lock:
            return {
                "replica": self._replica,
                "resident": sorted(self._resident),
                "registered": sorted(self._generator.adapters),
                "loads": dict(self._loads),
                "evictions": self._evictions,
            }


def deployment(
    kb: _StrPath,
    *,
    adapters: Mapping[str, _StrPath],
    journal: Optional[_StrPath] = None,
    ledger: Any = None,
    key_env: Optional[str] = "TRIBUTE_KEY",
    model: Optional[_StrPath] = None,
    num_replicas: int = 2,
    max_adapters_per_replica: int = 2,
    max_ongoing_requests: int = 4,
    engine_options: Optional[Mapping[str, Any]] = None,
    ray_actor_options: Optional[dict[str, Any]] = None,
    name: str = "TributeEngine",
) -> Any:
    """A Ray Serve application (pass it to `serve.run`) serving `tribute.Engine.ask`.

    `kb` is the knowledge base every replica opens (a `postgres://` URL for many replicas
    on many machines); `adapters` maps adapter ids to their files (a PEFT directory or an
    `.onnx_adapter`, readable on every node); `journal` (a `postgres://` URL for a shared
    journal), `ledger` and the key in the environment variable `key_env` (on every node;
    pass it with `ray_actor_options={"runtime_env": {"env_vars": …}}` to a remote
    cluster) sign and journal a receipt per answer. `model` is the generator's model
    directory (default: SmolLM2-135M-Instruct from `$TRIBUTE_HOME`); `engine_options` are
    further `tribute.Engine` keyword arguments (`top_k`, `max_tokens`, `method`, …).

    A request is `{"question": "…", "top_k": 4, …}` (an HTTP JSON body, or a dict through a
    handle); the reply is `{"answer": Answer.to_dict(), "receipt": canonical receipt JSON
    or None, "adapter", "replica", "resident" (the replica's adapters), "loaded" (whether
    the replica loaded the adapter for this request)}`.
    """
    if max_adapters_per_replica < 1:
        raise RequestError("max_adapters_per_replica must be at least 1")
    paths = {str(k): os.fspath(v) for k, v in adapters.items()}

    @ray_serve.deployment(
        name=name,
        num_replicas=num_replicas,
        max_ongoing_requests=max_ongoing_requests,
        ray_actor_options=dict(ray_actor_options or {}),
    )
    class TributeEngine(_EngineReplica):
        @ray_serve.multiplexed(max_num_models_per_replica=max_adapters_per_replica)  # type: ignore[untyped-decorator]
        async def resident(self, adapter_id: str) -> _Resident:
            return await asyncio.get_running_loop().run_in_executor(None, self._load, adapter_id)

        async def __call__(self, request: Any) -> dict[str, Any]:
            return await self._answer(request, self.resident)

    return TributeEngine.bind(  # type: ignore[attr-defined]
        kb=os.fspath(kb),
        adapters=paths,
        journal=None if journal is None else os.fspath(journal),
        ledger=ledger,
        key_env=key_env,
        model=None if model is None else os.fspath(model),
        engine_options=dict(engine_options or {}),
    )


def serve(
    kb: _StrPath,
    *,
    app_name: str = "tribute",
    route_prefix: str = "/",
    address: Optional[str] = None,
    **options: Any,
) -> Any:
    """Runs `deployment(kb, **options)` on the Ray cluster (the connected one, else the one
    at `address`, else a local one: `tribute.ray.connect`) and returns its
    `DeploymentHandle`: `handle.options(multiplexed_model_id="legal")
    .remote({"question": "…"}).result()`."""
    connect(address)
    app = deployment(kb, **options)
    return ray_serve.run(app, name=app_name, route_prefix=route_prefix)
