//! The KV cache of the static layout (`--ops static`): one buffer per past input,
//! `[row_capacity, kv_heads, columns, head_dim]`, allocated once and written in place by the
//! graph, which takes each buffer (a view of its rows in use) as both the past input and the
//! present output. Row `r`'s tokens sit in its columns `0..lens[r]` (right-padded: a token's
//! column is its position), so a decode step appends each row's token at that row's own
//! column and nothing is copied; rows join by having their columns copied in, and leave by
//! the last row's columns moving into their place.

use std::ffi::CString;
use std::ops::Range;

use ort::AsPointer;
use ort::memory::Allocator;
use ort::session::IoBinding;
use ort::value::{Shape, Tensor, TensorRefMut};

use super::Device;
use super::cache::HostTensor;
use super::forward::cache_memory;
use crate::config::{ModelConfig, layer_name};
use crate::error::{Error, Result};

/// Columns are allocated in steps of this many, so that a row joining with a slightly
/// longer need than the batch's rarely regrows the buffers.
const COLUMN_STEP: usize = 64;

/// The buffers of one running batch in the static layout, in host memory.
pub(super) struct KvBuffer {
    /// Layer by layer, key then value: `[row_capacity, heads, columns, dim]`.
    tensors: Vec<Tensor<f32>>,
    row_capacity: usize,
    columns: usize,
    heads: usize,
    dim: usize,
    /// The model's context: columns never grow past it.
    context: usize,
    /// The graph's past input and present output of each tensor, bound to the same memory.
    names: Vec<(String, String)>,
    /// Tokens cached in each row in use (rows `0..lens.len()`).
    pub(super) lens: Vec<usize>,
}

/// The columns a buffer needs for rows that may grow to `need` tokens, within `context`.
fn columns_for(need: usize, context: usize) -> usize {
    need.div_ceil(COLUMN_STEP)
        .saturating_mul(COLUMN_STEP)
        .min(context)
        .max(need)
}

impl KvBuffer {
    /// Buffers for `row_capacity` rows of up to `need` tokens each, none in use.
    pub(super) fn new(cfg: &ModelConfig, row_capacity: usize, need: usize) -> Result<Self> {
        let (i, o) = (&cfg.inputs, &cfg.outputs);
        let names = (0..cfg.num_layers)
            .flat_map(|l| {
                [
                    (layer_name(&i.past_key, l), layer_name(&o.present_key, l)),
                    (
                        layer_name(&i.past_value, l),
                        layer_name(&o.present_value, l),
                    ),
                ]
            })
            .collect();
        Self::with_shape(
            names,
            [row_capacity, cfg.num_kv_heads, need, cfg.head_dim],
            cfg.context_length,
        )
    }

    /// A buffer of `[rows, heads, columns_for(need), dim]` for each of `names`.
    fn with_shape(
        names: Vec<(String, String)>,
        [rows, heads, need, dim]: [usize; 4],
        context: usize,
    ) -> Result<Self> {
        let columns = columns_for(need, context);
        let allocator = Allocator::default();
        let tensors = (0..names.len())
            .map(|_| Tensor::<f32>::new(&allocator, [rows.max(1), heads, columns, dim]))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(KvBuffer {
            tensors,
            row_capacity: rows.max(1),
            columns,
            heads,
            dim,
            context,
            names,
            lens: Vec::new(),
        })
    }

    /// Rows in use.
    pub(super) fn rows(&self) -> usize {
        self.lens.len()
    }

    /// Columns per row.
    pub(super) fn columns(&self) -> usize {
        self.columns
    }

    /// Whether `rows` more rows of up to `need` tokens fit without regrowing.
    pub(super) fn fits(&self, rows: usize, need: usize) -> bool {
        self.rows() + rows <= self.row_capacity && need <= self.columns
    }

    fn row_len(&self) -> usize {
        self.heads * self.columns * self.dim
    }

    /// Row `row` of tensor `t`, `[heads, columns, dim]`.
    fn row_data(&mut self, t: usize, row: usize) -> &mut [f32] {
        let n = self.row_len();
        let (_, data) = self.tensors[t].extract_tensor_mut();
        &mut data[row * n..(row + 1) * n]
    }

    /// Adds a row holding `prefix` (`[1, heads, tokens, dim]` per tensor, or nothing): its
    /// index.
    pub(super) fn push_row(&mut self, prefix: Option<&[HostTensor<f32>]>) -> Result<usize> {
        let row = self.rows();
        if row >= self.row_capacity {
            return Err(internal("a row pushed past the buffer's capacity"));
        }
        let mut len = 0;
        if let Some(layers) = prefix {
            if layers.len() != self.tensors.len() {
                return Err(internal("a cached prefix with another layer count"));
            }
            len = layers.first().map_or(0, |t| t.shape[2]);
            if len > self.columns {
                return Err(internal("a cached prefix longer than the buffer"));
            }
            let (cols, dim) = (self.columns, self.dim);
            for (t, src) in layers.iter().enumerate() {
                let dst = self.row_data(t, row);
                for (h, head) in src.data.chunks_exact(len * dim).enumerate() {
                    dst[h * cols * dim..h * cols * dim + len * dim].copy_from_slice(head);
                }
            }
        }
        self.lens.push(len);
        Ok(row)
    }

    /// Row `row`'s columns `keep`, `[1, heads, keep.len(), dim]` per tensor (for the
    /// prompt cache).
    pub(super) fn columns_of(&self, row: usize, keep: Range<usize>) -> Vec<HostTensor<f32>> {
        let shape = [self.row_capacity, self.heads, self.columns, self.dim];
        self.tensors
            .iter()
            .map(|t| {
                let (_, data) = t.extract_tensor();
                super::prompt_cache::columns(shape, data, row, keep.clone())
            })
            .collect()
    }

    /// Removes row `row`: the last row's columns move into its place (rows are unordered).
    pub(super) fn swap_remove(&mut self, row: usize) {
        let last = self.rows() - 1;
        if row != last {
            let (n, cols, dim) = (self.row_len(), self.columns, self.dim);
            let len = self.lens[last];
            for t in 0..self.tensors.len() {
                let (_, data) = self.tensors[t].extract_tensor_mut();
                for h in 0..self.heads {
                    let from = last * n + h * cols * dim;
                    let to = row * n + h * cols * dim;
                    data.copy_within(from..from + len * dim, to);
                }
            }
        }
        self.lens.swap_remove(row);
    }

    /// Buffers with room for `rows` rows of up to `need` tokens, holding this one's rows.
    pub(super) fn regrown(&self, rows: usize, need: usize) -> Result<Self> {
        let mut out = KvBuffer::with_shape(
            self.names.clone(),
            [
                rows.max(self.rows()),
                self.heads,
                need.max(self.columns),
                self.dim,
            ],
            self.context,
        )?;
        for row in 0..self.rows() {
            let cols = self.columns_of(row, 0..self.lens[row]);
            out.push_row(Some(&cols))?;
        }
        Ok(out)
    }

    /// Binds rows `rows` of every buffer as its past input and present output of
    /// `binding`: the same memory, which the graph's attention detects and appends to in
    /// place.
    pub(super) fn bind(&mut self, binding: &mut IoBinding, rows: Range<usize>) -> Result<()> {
        if rows.is_empty() || rows.end > self.row_capacity {
            return Err(internal("a view outside the buffer's rows"));
        }
        let memory = cache_memory(Device::Cpu)?;
        let shape = Shape::new([rows.len(), self.heads, self.columns, self.dim].map(|d| d as i64));
        let offset = rows.start * self.row_len();
        for (tensor, (past, present)) in self.tensors.iter_mut().zip(&self.names) {
            // SAFETY: the view covers rows `rows` of a tensor this buffer owns (checked to
            // lie within it), and that memory outlives every run of `binding` that uses it:
            // the batch rebinds its buffers before every run, and a buffer is replaced or
            // dropped only between runs.
            let view: TensorRefMut<'_, f32> = unsafe {
                let base = tensor.data_ptr_mut().cast::<f32>().add(offset);
                TensorRefMut::from_raw(memory.clone(), base.cast(), shape.clone())?
            };
            bind_input_in_place(binding, past, &view)?;
            binding.bind_output(present.as_str(), view)?;
        }
        Ok(())
    }
}

/// Binds `value` as input `name`. `IoBinding::bind_input` copies a value that borrows its
/// memory (as a view does), which would defeat writing the cache in place.
fn bind_input_in_place(
    binding: &mut IoBinding,
    name: &str,
    value: &TensorRefMut<'_, f32>,
) -> Result<()> {
    let name = CString::new(name).map_err(|_| internal("an input name with a NUL byte"))?;
    // SAFETY: the binding and the value are live ONNX Runtime objects; ONNX Runtime keeps its
    // own reference to the value (not to its memory, which the caller keeps alive, see
    // `KvBuffer::bind`).
    unsafe {
        ort::Error::result_from_status((ort::api().BindInput)(
            binding.ptr_mut(),
            name.as_ptr(),
            value.ptr(),
        ))?;
    }
    Ok(())
}

fn internal(what: &str) -> Error {
    Error::InvalidRequest(format!("internal: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_grow_in_steps_within_the_context() {
        assert_eq!(columns_for(1, 8192), 64);
        assert_eq!(columns_for(64, 8192), 64);
        assert_eq!(columns_for(65, 8192), 128);
        assert_eq!(columns_for(100, 96), 100);
        assert_eq!(columns_for(90, 96), 96);
    }
}
