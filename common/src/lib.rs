//! Tribute's foundation, shared by every other crate and depending on none of them:
//!
//! - [`ort_library`]: the ONNX Runtime shared library and the one process-wide
//!   environment, shared by `tribute-index` (embeddings) and `tribute-inference`
//!   (generation) so that neither depends on the other (feature `ort`);
//! - [`PerProcess`]: a value made once per process and re-made in a forked child (thread
//!   pools, async runtimes);
//! - [`address`]: the one Ethereum address parser (EIP-55 checked) and its serde form;
//! - [`wei`]: amounts in wei, parsed and serialized the same way everywhere;
//! - [`bps`]: basis points, the unit every weight and share is expressed in;
//! - `anvil` (feature `anvil`, for tests and benchmarks): a throwaway local anvil;
//! - `scratch_db` (feature `scratch-db`, for tests): an empty PostgreSQL database per test.

pub mod address;
#[cfg(feature = "anvil")]
pub mod anvil;
pub mod bps;
mod error_chain;
#[cfg(feature = "ort")]
pub mod ort_library;
mod per_process;
#[cfg(feature = "scratch-db")]
pub mod scratch_db;
pub mod wei;

pub use address::{AddressError, parse_address};
pub use alloy_primitives::{Address, U256};
pub use bps::TOTAL_BPS;
pub use error_chain::error_chain;
#[cfg(feature = "ort")]
pub use ort_library::{
    OrtLibraryError, OrtLibrarySearch, environment, locate_ort_library, tribute_home,
};
pub use per_process::PerProcess;
