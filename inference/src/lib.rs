//! Local generation with ONNX Runtime and hot-swapped LoRA adapters.
//!
//! Reserved for the generation engine (decoder LMs, KV cache, sampling, streaming,
//! LoRA adapters); it has no public API yet. See `docs/ARCHITECTURE.md` for its place
//! in the workspace.
