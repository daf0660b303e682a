//! Citation weights, reward splits and signed usage receipts.
//!
//! Reserved for attribution (per-chunk citation weights, exact reward splits, EIP-712
//! receipts, the journal and settlement); it has no public API yet. See
//! `docs/ARCHITECTURE.md` for its place in the workspace.
