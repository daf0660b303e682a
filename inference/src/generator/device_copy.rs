//! Copies between tensors wherever they live (rows of the static layout's buffers in device
//! memory, to and from host memory), through a one-node graph (`Identity`) on the buffers'
//! device.
//!
//! ort's own `Tensor::copy_into` does the same with its own identity graph, but binds the
//! source through `IoBinding::bind_input`, which first clones a value that borrows its memory;
//! for a view (a row of a buffer) that clone re-enters ort's copy while it holds its lock, and
//! never returns. Here the source is bound in place (`kv_buffer::bind_input_in_place`).
//!
//! `identity/float32.onnx` and `identity/float16.onnx` were written by `onnx.helper`: one
//! `Identity` node from `x` to `y`, both `[a, b, c, d]` of the element type, opset 13.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Mutex, OnceLock};

use ort::memory::Allocator;
use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::value::{TensorRefMut, TensorValueType, Value};

use super::Device;
use super::capture::device_use;
use super::forward::cache_memory;
use super::kv_buffer::{CacheElement, bind_input_in_place};
use crate::config::FloatDtype;
use crate::error::{Error, Result};

/// One identity graph per device and element type, built on first use and kept: a copy is
/// one run of it.
static COPIERS: OnceLock<Mutex<HashMap<(Device, FloatDtype), Session>>> = OnceLock::new();

/// Copies `src` into `dst` (same element type and shape), on `device`'s execution provider;
/// either side may be in host or device memory. Returns when the copy is done.
pub(super) fn copy<T: CacheElement>(
    device: Device,
    src: &Value<TensorValueType<T>>,
    dst: TensorRefMut<'_, T>,
) -> Result<()> {
    with_copier(device, T::DTYPE, |session| {
        let mut binding = session.create_binding()?;
        bind_input_in_place(&mut binding, "x", src)?;
        binding.bind_output("y", dst)?;
        let _use = device_use();
        session.run_binding(&binding)?;
        Ok(())
    })
}

/// An allocator on `device` from an arena of the generator's own: the identity graph's
/// session's, which no model session allocates from (see `graph_step`).
pub(super) fn own_allocator(device: Device) -> Result<Allocator> {
    with_copier(device, FloatDtype::Float32, |session| {
        Ok(Allocator::new(session, cache_memory(device)?)?)
    })
}

/// Runs `f` on the identity graph of `device` and `dtype` (built the first time).
fn with_copier<R>(
    device: Device,
    dtype: FloatDtype,
    f: impl FnOnce(&mut Session) -> Result<R>,
) -> Result<R> {
    let mut copiers = COPIERS
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .map_err(|_| Error::internal("the copy graphs were poisoned by a panic"))?;
    let session = match copiers.entry((device, dtype)) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(e) => {
            let model: &[u8] = match dtype {
                FloatDtype::Float32 => include_bytes!("identity/float32.onnx"),
                FloatDtype::Float16 => include_bytes!("identity/float16.onnx"),
            };
            e.insert(small_session(
                device,
                model,
                GraphOptimizationLevel::Disable,
            )?)
        }
    };
    f(session)
}

/// A one-thread session on `device` for a small graph the generator embeds (a copy, the
/// device sampler).
pub(super) fn small_session(
    device: Device,
    model: &[u8],
    optimization: GraphOptimizationLevel,
) -> Result<Session> {
    let env = tribute_common::environment()?;
    let builder = Session::builder(&env)?
        .with_optimization_level(optimization)
        .map_err(builder_err)?
        .with_intra_threads(1)
        .map_err(builder_err)?;
    Ok(with_device(builder, device)?.commit_from_memory(model)?)
}

/// `builder` with `device`'s execution provider registered (none for the CPU).
fn with_device(builder: SessionBuilder, device: Device) -> Result<SessionBuilder> {
    match device {
        Device::Cpu => Ok(builder),
        #[cfg(feature = "cuda")]
        Device::Cuda { device_id } => builder
            .with_execution_providers([ort::ep::CUDA::default()
                .with_device_id(device_id)
                .build()
                .error_on_failure()])
            .map_err(builder_err),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda { .. } => Err(Error::internal(
            "a graph on a CUDA device in a build without the `cuda` feature",
        )),
    }
}

fn builder_err(e: ort::Error<SessionBuilder>) -> Error {
    Error::from(ort::Error::from(e))
}
