//! The KV cache of the static layout (`--ops static`): one buffer per past input,
//! `[row_capacity, kv_heads, columns, head_dim]`, allocated once and written in place by the
//! graph, which takes each buffer (a view of its rows in use) as both the past input and the
//! present output. Row `r`'s tokens sit in its columns `0..lens[r]` (right-padded: a token's
//! column is its position), so a decode step appends each row's token at that row's own
//! column and nothing is copied; rows join by having their columns copied in, and leave by
//! the last row's columns moving into their place.

use std::ffi::CString;
use std::ops::Range;

use half::f16;
use ort::AsPointer;
use ort::memory::{Allocator, MemoryInfo};
use ort::session::IoBinding;
use ort::value::{PrimitiveTensorElementType, Shape, Tensor, TensorRefMut};

use super::Device;
use super::cache::HostTensor;
use super::forward::cache_memory;
use crate::config::{KvDtype, ModelConfig, layer_name};
use crate::error::{Error, Result};

/// Columns are allocated in steps of this many, so that a row joining with a slightly
/// longer need than the batch's rarely regrows the buffers.
const COLUMN_STEP: usize = 64;

/// An element of a cache buffer: the graph's `kv_dtype`. Host copies (the prompt cache,
/// rows moving between batches) are float32; a float16 value widened and narrowed again is
/// unchanged.
trait CacheElement: PrimitiveTensorElementType + Copy + Into<f32> + std::fmt::Debug + 'static {
    fn from_f32(x: f32) -> Self;
}

impl CacheElement for f32 {
    fn from_f32(x: f32) -> Self {
        x
    }
}

impl CacheElement for f16 {
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
}

/// Layer by layer, key then value: `[row_capacity, heads, columns, dim]`, of the graph's
/// cache type.
enum Tensors {
    F32(Vec<Tensor<f32>>),
    F16(Vec<Tensor<f16>>),
}

/// Runs `$body` with `$t` bound to the buffer's tensors, whichever their element type.
macro_rules! each_type {
    ($tensors:expr, $t:ident => $body:expr) => {
        match $tensors {
            Tensors::F32($t) => $body,
            Tensors::F16($t) => $body,
        }
    };
}

/// The buffers of one running batch in the static layout, in host memory.
pub(super) struct KvBuffer {
    tensors: Tensors,
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
            cfg.kv_dtype,
            [row_capacity, cfg.num_kv_heads, need, cfg.head_dim],
            cfg.context_length,
        )
    }

    /// A buffer of `[rows, heads, columns_for(need), dim]` for each of `names`.
    fn with_shape(
        names: Vec<(String, String)>,
        dtype: KvDtype,
        [rows, heads, need, dim]: [usize; 4],
        context: usize,
    ) -> Result<Self> {
        let columns = columns_for(need, context);
        let shape = [rows.max(1), heads, columns, dim];
        let tensors = match dtype {
            KvDtype::Float32 => Tensors::F32(allocate(names.len(), shape)?),
            KvDtype::Float16 => Tensors::F16(allocate(names.len(), shape)?),
        };
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

    /// Adds a row holding `prefix` (`[1, heads, tokens, dim]` per tensor, or nothing): its
    /// index.
    pub(super) fn push_row(&mut self, prefix: Option<&[HostTensor<f32>]>) -> Result<usize> {
        let row = self.rows();
        if row >= self.row_capacity {
            return Err(internal("a row pushed past the buffer's capacity"));
        }
        let mut len = 0;
        if let Some(layers) = prefix {
            if layers.len() != self.names.len() {
                return Err(internal("a cached prefix with another layer count"));
            }
            len = layers.first().map_or(0, |t| t.shape[2]);
            if len > self.columns {
                return Err(internal("a cached prefix longer than the buffer"));
            }
            let (n, cols, dim) = (self.row_len(), self.columns, self.dim);
            each_type!(&mut self.tensors, tensors => {
                for (tensor, src) in tensors.iter_mut().zip(layers) {
                    let (_, data) = tensor.extract_tensor_mut();
                    let dst = &mut data[row * n..(row + 1) * n];
                    for (h, head) in src.data.chunks_exact(len * dim).enumerate() {
                        let to = &mut dst[h * cols * dim..h * cols * dim + len * dim];
                        for (d, &x) in to.iter_mut().zip(head) {
                            *d = CacheElement::from_f32(x);
                        }
                    }
                }
            });
        }
        self.lens.push(len);
        Ok(row)
    }

    /// Row `row`'s columns `keep`, `[1, heads, keep.len(), dim]` per tensor, as float32 (for
    /// the prompt cache and rows moving between batches).
    pub(super) fn columns_of(&self, row: usize, keep: Range<usize>) -> Vec<HostTensor<f32>> {
        let shape = [self.row_capacity, self.heads, self.columns, self.dim];
        each_type!(&self.tensors, tensors => tensors
            .iter()
            .map(|t| {
                let (_, data) = t.extract_tensor();
                super::prompt_cache::columns(shape, data, row, keep.clone())
            })
            .collect())
    }

    /// Removes row `row`: the last row's columns move into its place (rows are unordered).
    pub(super) fn swap_remove(&mut self, row: usize) {
        let last = self.rows() - 1;
        if row != last {
            let (n, cols, dim) = (self.row_len(), self.columns, self.dim);
            let len = self.lens[last];
            each_type!(&mut self.tensors, tensors => {
                for tensor in tensors.iter_mut() {
                    let (_, data) = tensor.extract_tensor_mut();
                    for h in 0..self.heads {
                        let from = last * n + h * cols * dim;
                        let to = row * n + h * cols * dim;
                        data.copy_within(from..from + len * dim, to);
                    }
                }
            });
        }
        self.lens.swap_remove(row);
    }

    /// Buffers with room for `rows` rows of up to `need` tokens, holding this one's rows.
    pub(super) fn regrown(&self, rows: usize, need: usize) -> Result<Self> {
        let dtype = match self.tensors {
            Tensors::F32(_) => KvDtype::Float32,
            Tensors::F16(_) => KvDtype::Float16,
        };
        let mut out = KvBuffer::with_shape(
            self.names.clone(),
            dtype,
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
        each_type!(&mut self.tensors, tensors => {
            for (tensor, (past, present)) in tensors.iter_mut().zip(&self.names) {
                bind_rows(binding, &memory, tensor, offset, &shape, past, present)?;
            }
        });
        Ok(())
    }
}

/// `count` zeroed tensors of `shape`, in host memory.
fn allocate<T: CacheElement>(count: usize, shape: [usize; 4]) -> Result<Vec<Tensor<T>>> {
    let allocator = Allocator::default();
    let elements = shape.iter().product::<usize>();
    (0..count)
        .map(|_| {
            let mut t = Tensor::<T>::new(&allocator, shape)?;
            // SAFETY: ONNX Runtime allocates `elements` elements uninitialized; they are
            // zeroed before any slice of them is made (both element types are valid as
            // zero bytes).
            unsafe { std::ptr::write_bytes(t.data_ptr_mut().cast::<T>(), 0, elements) };
            Ok(t)
        })
        .collect()
}

/// Binds the rows of `tensor` from element `offset` on, `shape`, as both input `past` and
/// output `present` of `binding`.
fn bind_rows<T: CacheElement>(
    binding: &mut IoBinding,
    memory: &MemoryInfo<'_>,
    tensor: &mut Tensor<T>,
    offset: usize,
    shape: &Shape,
    past: &str,
    present: &str,
) -> Result<()> {
    // SAFETY: the caller checked that `offset` and `shape` lie within the tensor (its rows
    // in use), and that memory outlives every run of `binding` that uses it: the batch
    // rebinds its buffers before every run, and a buffer is replaced or dropped only
    // between runs.
    let view: TensorRefMut<'_, T> = unsafe {
        let base = tensor.data_ptr_mut().cast::<T>().add(offset);
        TensorRefMut::from_raw(memory.clone(), base.cast(), shape.clone())?
    };
    bind_input_in_place(binding, past, &view)?;
    binding.bind_output(present, view)?;
    Ok(())
}

/// Binds `value` as input `name`. `IoBinding::bind_input` copies a value that borrows its
/// memory (as a view does), which would defeat writing the cache in place.
fn bind_input_in_place<T: CacheElement>(
    binding: &mut IoBinding,
    name: &str,
    value: &TensorRefMut<'_, T>,
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

    /// Two tensors' prefix of `len` columns, values a float16 holds exactly.
    fn prefix(base: f32, len: usize) -> Vec<HostTensor<f32>> {
        (0..2)
            .map(|t| HostTensor {
                shape: [1, 2, len, 4],
                data: (0..2 * len * 4)
                    .map(|i| base + t as f32 + i as f32 / 8.0)
                    .collect(),
            })
            .collect()
    }

    fn assert_row(kv: &KvBuffer, row: usize, want: &[HostTensor<f32>]) {
        let len = want[0].shape[2];
        assert_eq!(kv.lens[row], len);
        for (got, want) in kv.columns_of(row, 0..len).iter().zip(want) {
            assert_eq!((got.shape, &got.data), (want.shape, &want.data));
        }
    }

    /// Rows pushed, regrown into more rows and columns, and removed keep their values,
    /// in either element type.
    #[test]
    fn rows_keep_their_columns_through_pushes_regrowth_and_removal() {
        let _ort = tribute_common::ort_library::environment().expect("ONNX Runtime");
        for dtype in [KvDtype::Float32, KvDtype::Float16] {
            let names = vec![("p0".into(), "q0".into()), ("p1".into(), "q1".into())];
            let mut kv = KvBuffer::with_shape(names, dtype, [2, 2, 3, 4], 100).expect("alloc");
            assert_eq!(kv.columns(), 64);
            let (a, b, c) = (prefix(1.0, 3), prefix(-5.0, 2), prefix(20.0, 1));
            assert_eq!(kv.push_row(Some(&a)).expect("a"), 0);
            assert_eq!(kv.push_row(Some(&b)).expect("b"), 1);
            assert!(kv.push_row(None).is_err(), "past the capacity");
            assert!(!kv.fits(1, 3) && !kv.fits(0, 65));
            let mut kv = kv.regrown(3, 70).expect("regrown");
            assert_eq!(kv.columns(), 100);
            assert_eq!(kv.push_row(Some(&c)).expect("c"), 2);
            for (row, want) in [&a, &b, &c].into_iter().enumerate() {
                assert_row(&kv, row, want);
            }
            kv.swap_remove(0);
            assert_row(&kv, 0, &c);
            assert_row(&kv, 1, &b);
            assert_eq!(kv.rows(), 2, "{dtype:?}");
        }
    }

    #[test]
    fn columns_grow_in_steps_within_the_context() {
        assert_eq!(columns_for(1, 8192), 64);
        assert_eq!(columns_for(64, 8192), 64);
        assert_eq!(columns_for(65, 8192), 128);
        assert_eq!(columns_for(100, 96), 100);
        assert_eq!(columns_for(90, 96), 96);
    }
}
