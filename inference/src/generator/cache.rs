//! Reshaping a batch's KV cache on the host when rows join or leave: rows picked from one
//! or more caches (read in place where they are in host memory), each left-padded (with
//! zeros, masked out) to a common width.
//!
//! The cache layout is `[rows, kv_heads, columns, head_dim]` per layer and key/value, with
//! every row's latest token in the last column; the attention mask is `[rows, columns]`,
//! the same layout with one head of width 1.

use ort::memory::AllocationDevice;
use ort::value::{DynTensorValueType, DynValue};

use crate::error::{Error, Result};
use crate::floats::read_floats;

/// A tensor copied to (or read in place from) host memory: `[rows, heads, cols, dim]`.
pub(super) struct HostTensor<T> {
    pub(super) shape: [usize; 4],
    pub(super) data: Vec<T>,
}

/// A KV tensor `[rows, heads, cols, dim]` read in place; an error if it is in device
/// memory.
pub(super) fn host_view(v: &DynValue) -> std::result::Result<([usize; 4], &[f32]), ort::Error> {
    let (shape, data) = v.try_extract_tensor::<f32>()?;
    let d: Vec<usize> = shape.iter().map(|&x| x as usize).collect();
    Ok(([d[0], d[1], d[2], d[3]], data))
}

impl HostTensor<f32> {
    /// A KV tensor's values as float32 (a float16 cache widened, exactly), copied off the
    /// device first if the session left it there.
    pub(super) fn from_value(v: &DynValue) -> Result<Self> {
        let (shape, data) = match read_floats(v) {
            Ok(read) => read,
            // Device memory cannot be read in place.
            Err(_) => {
                let tensor = v.view().downcast::<DynTensorValueType>()?;
                read_floats(&tensor.to(AllocationDevice::CPU, 0)?.into_dyn())?
            }
        };
        let [rows, heads, cols, dim] = shape[..] else {
            return Err(Error::InvalidRequest(format!(
                "internal: a cache tensor of shape {shape:?}"
            )));
        };
        Ok(HostTensor {
            shape: [rows, heads, cols, dim],
            data,
        })
    }
}

impl HostTensor<i64> {
    /// An attention mask `[rows, cols]` in the cache's layout.
    pub(super) fn mask(data: Vec<i64>, rows: usize, cols: usize) -> Self {
        HostTensor {
            shape: [rows, 1, cols, 1],
            data,
        }
    }
}

/// One output row: row `row` of source `src`, from column `from` on.
#[derive(Clone, Copy)]
pub(super) struct Pick {
    pub(super) src: usize,
    pub(super) row: usize,
    pub(super) from: usize,
}

/// A `[rows, heads, cols, dim]` tensor's shape and values, read in place.
pub(super) type View<'a, T> = ([usize; 4], &'a [T]);

impl<T> HostTensor<T> {
    /// This tensor read in place.
    pub(super) fn view(&self) -> View<'_, T> {
        (self.shape, &self.data)
    }
}

/// Rows picked from `srcs` (same heads and head size), each keeping its columns from
/// `from` on and left-padded with `T::default()` to `width`: `[picks, heads, width, dim]`.
pub(super) fn gather<T: Copy + Default>(
    srcs: &[View<'_, T>],
    picks: &[Pick],
    width: usize,
) -> Vec<T> {
    let Some(&([_, heads, _, dim], _)) = srcs.first() else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(picks.len() * heads * width * dim);
    for p in picks {
        let (shape, data) = srcs[p.src];
        let cols = shape[2];
        let kept = cols - p.from;
        for h in 0..heads {
            let block = (p.row * heads + h) * cols * dim;
            out.extend(std::iter::repeat_n(T::default(), (width - kept) * dim));
            out.extend_from_slice(&data[block + p.from * dim..block + cols * dim]);
        }
    }
    out
}

/// The first attended column of each mask row (`cols` if none).
pub(super) fn first_attended(mask: &[i64], rows: usize, cols: usize) -> Vec<usize> {
    (0..rows)
        .map(|r| {
            mask[r * cols..(r + 1) * cols]
                .iter()
                .position(|&m| m != 0)
                .unwrap_or(cols)
        })
        .collect()
}
