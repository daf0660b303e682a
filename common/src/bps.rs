//! Basis points: weights and shares are integers out of [`TOTAL_BPS`], so that splits
//! are exact and the same on every machine and on chain.

/// 100 % in basis points.
pub const TOTAL_BPS: u32 = 10_000;
