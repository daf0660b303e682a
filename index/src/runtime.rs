//! The ONNX Runtime library and environment (see `tribute-runtime`), with this crate's error.

pub use tribute_runtime::{locate_ort_library, tribute_home};

use crate::error::{Error, Result};

/// The process-wide ONNX Runtime environment, loading the library on first use.
pub fn environment() -> Result<ort::environment::Environment> {
    tribute_runtime::environment().map_err(|e| Error::OrtLibrary {
        reason: e.reason,
        searched: e.searched,
    })
}
