//! The KV cache of the static layout (`--ops static`): one buffer per past input,
//! `[row_capacity, kv_heads, columns, head_dim]`, allocated once and written in place by the
//! graph, which takes each buffer (a view of its rows in use) as both the past input and the
//! present output. Row `r`'s tokens sit in its columns `0..lens[r]` (right-padded: a token's
//! column is its position), so a decode step appends each row's token at that row's own
//! column and nothing is copied; rows join by having their columns copied in, and leave by
//! the last row's columns moving into their place.
//!
//! The buffers live where the session runs ([`Placement`]): in host memory rows are read and
//! written in place; in device memory (CUDA) rows move through copies on the device
//! (`device_copy`).

use std::ffi::CString;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use half::f16;
use ort::AsPointer;
use ort::memory::{Allocator, MemoryInfo};
use ort::session::IoBinding;
use ort::value::{PrimitiveTensorElementType, Shape, Tensor, TensorRefMut, Value, ValueTypeMarker};

use super::Device;
use super::cache::HostTensor;
use super::capture::device_use;
use super::device_copy::{copy, own_allocator};
use super::forward::cache_memory;
use super::prompt_cache::columns;
use crate::config::{FloatDtype, ModelConfig, layer_name};
use crate::error::{Error, Result};

/// Columns are allocated in steps of this many, so that a row joining with a slightly
/// longer need than the batch's rarely regrows the buffers.
const COLUMN_STEP: usize = 64;

/// An element of a cache buffer: the graph's `kv_dtype`. Host copies (the prompt cache) are
/// float32; a float16 value widened and narrowed again is unchanged.
pub(super) trait CacheElement: Element + Into<f32> {
    /// The `kv_dtype` of this element type.
    const DTYPE: FloatDtype;
    /// `x` narrowed to this type (exact for a value widened from it).
    fn from_f32(x: f32) -> Self;
}

impl CacheElement for f32 {
    const DTYPE: FloatDtype = FloatDtype::Float32;
    fn from_f32(x: f32) -> Self {
        x
    }
}

impl CacheElement for f16 {
    const DTYPE: FloatDtype = FloatDtype::Float16;
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

/// Where a batch's buffers live, and how rows move in and out of them.
pub(super) struct Placement {
    /// Locked: ONNX Runtime's CUDA allocator is not safe to share between threads.
    allocator: Mutex<Allocator>,
    memory: MemoryInfo<'static>,
    /// Host memory, read and written in place; otherwise whole rows move through copies on
    /// `device` (`device_copy`: device memory cannot be sliced from here).
    in_host: bool,
    device: Device,
}

impl Placement {
    /// Memory on `device`. On CUDA it comes from the generator's own arena, not a model
    /// session's: a captured CUDA graph may write into what a session's arena hands out
    /// after the capture (`graph_step`).
    pub(super) fn of(device: Device) -> Result<Arc<Self>> {
        let memory = cache_memory(device)?;
        Ok(Arc::new(match device {
            Device::Cpu => Placement {
                allocator: Mutex::new(Allocator::default()),
                memory,
                in_host: true,
                device,
            },
            Device::Cuda { .. } => Placement {
                allocator: Mutex::new(own_allocator(device)?),
                memory,
                in_host: false,
                device,
            },
        }))
    }

    /// The device the memory is on.
    pub(super) fn device(&self) -> Device {
        self.device
    }

    /// A tensor of `shape` here (zeroed in host memory).
    pub(super) fn tensor<T: Element>(&self, shape: &[usize]) -> Result<Tensor<T>> {
        Ok(allocate(self, 1, shape)?.remove(0))
    }

    /// Writes `data` over `t`, a tensor here of as many elements.
    pub(super) fn write<T: Element>(&self, t: &mut Tensor<T>, data: &[T]) -> Result<()> {
        if self.in_host {
            let (_, dst) = t.extract_tensor_mut();
            if dst.len() != data.len() {
                return Err(Error::internal(
                    "a tensor written with another element count",
                ));
            }
            dst.copy_from_slice(data);
            return Ok(());
        }
        let shape: Vec<usize> = t.shape().iter().map(|&d| d as usize).collect();
        let host = Tensor::from_array((shape, data.to_vec()))?;
        let _use = device_use();
        host.copy_into(t)?;
        Ok(())
    }

    /// `t`'s elements (a tensor here), in host memory.
    pub(super) fn read<T: Element>(&self, t: &mut Tensor<T>) -> Result<Vec<T>> {
        if self.in_host {
            return Ok(t.extract_tensor().1.to_vec());
        }
        let shape: Vec<usize> = t.shape().iter().map(|&d| d as usize).collect();
        let mut host = Tensor::<T>::new(&Allocator::default(), shape)?;
        let _use = device_use();
        t.copy_into(&mut host)?;
        Ok(host.extract_tensor().1.to_vec())
    }
}

/// An element type of tensors a [`Placement`] holds.
pub(super) trait Element:
    PrimitiveTensorElementType + Copy + std::fmt::Debug + 'static
{
}
impl<T: PrimitiveTensorElementType + Copy + std::fmt::Debug + 'static> Element for T {}

/// The shape of one buffer: `[row_capacity, heads, columns, dim]`.
#[derive(Clone, Copy)]
struct Geometry {
    row_capacity: usize,
    heads: usize,
    columns: usize,
    dim: usize,
}

impl Geometry {
    fn row_len(self) -> usize {
        self.heads * self.columns * self.dim
    }

    fn shape(self, rows: usize) -> [usize; 4] {
        [rows, self.heads, self.columns, self.dim]
    }
}

/// The buffers of one running batch in the static layout.
pub(super) struct KvBuffer {
    /// Distinct for every allocation (a fixed decode step is made for one).
    id: u64,
    tensors: Tensors,
    at: Arc<Placement>,
    geometry: Geometry,
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
    /// Buffers at `at` for `row_capacity` rows of up to `need` tokens each, none in use.
    pub(super) fn new(
        cfg: &ModelConfig,
        at: Arc<Placement>,
        row_capacity: usize,
        need: usize,
    ) -> Result<Self> {
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
            at,
            [row_capacity, cfg.num_kv_heads, need, cfg.head_dim],
            cfg.context_length,
        )
    }

    /// A buffer of `[rows, heads, columns_for(need), dim]` for each of `names`.
    pub(super) fn with_shape(
        names: Vec<(String, String)>,
        dtype: FloatDtype,
        at: Arc<Placement>,
        [rows, heads, need, dim]: [usize; 4],
        context: usize,
    ) -> Result<Self> {
        let geometry = Geometry {
            row_capacity: rows.max(1),
            heads,
            columns: columns_for(need, context),
            dim,
        };
        let shape = geometry.shape(geometry.row_capacity);
        let tensors = match dtype {
            FloatDtype::Float32 => Tensors::F32(allocate(&at, names.len(), &shape)?),
            FloatDtype::Float16 => Tensors::F16(allocate(&at, names.len(), &shape)?),
        };
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Ok(KvBuffer {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            tensors,
            at,
            geometry,
            context,
            names,
            lens: Vec::new(),
        })
    }

    /// Bytes the buffers hold (every row they were allocated for).
    pub(super) fn bytes(&self) -> usize {
        let (count, element) = match &self.tensors {
            Tensors::F32(t) => (t.len(), std::mem::size_of::<f32>()),
            Tensors::F16(t) => (t.len(), std::mem::size_of::<f16>()),
        };
        count * self.geometry.row_capacity * self.geometry.row_len() * element
    }

    /// This allocation's id.
    pub(super) fn id(&self) -> u64 {
        self.id
    }

    /// Rows allocated.
    pub(super) fn row_capacity(&self) -> usize {
        self.geometry.row_capacity
    }

    /// Where the buffers live.
    pub(super) fn placement(&self) -> Arc<Placement> {
        self.at.clone()
    }

    /// Rows in use.
    pub(super) fn rows(&self) -> usize {
        self.lens.len()
    }

    /// Columns per row.
    pub(super) fn columns(&self) -> usize {
        self.geometry.columns
    }

    /// Whether `rows` more rows of up to `need` tokens fit without regrowing.
    pub(super) fn fits(&self, rows: usize, need: usize) -> bool {
        self.rows() + rows <= self.geometry.row_capacity && need <= self.geometry.columns
    }

    /// Adds a row holding `prefix` (`[1, heads, tokens, dim]` per tensor, or nothing): its
    /// index.
    pub(super) fn push_row(&mut self, prefix: Option<&[HostTensor<f32>]>) -> Result<usize> {
        let row = self.rows();
        if row >= self.geometry.row_capacity {
            return Err(Error::internal("a row pushed past the buffer's capacity"));
        }
        let mut len = 0;
        if let Some(layers) = prefix {
            if layers.len() != self.names.len() {
                return Err(Error::internal("a cached prefix with another layer count"));
            }
            len = layers.first().map_or(0, |t| t.shape[2]);
            if len > self.geometry.columns {
                return Err(Error::internal("a cached prefix longer than the buffer"));
            }
            let (at, g) = (&self.at, self.geometry);
            each_type!(&mut self.tensors, tensors => {
                for (tensor, src) in tensors.iter_mut().zip(layers) {
                    write_row(at, g, tensor, row, src)?;
                }
            });
        }
        self.lens.push(len);
        Ok(row)
    }

    /// Row `row`'s columns `keep`, `[1, heads, keep.len(), dim]` per tensor, as float32 (for
    /// the prompt cache).
    pub(super) fn columns_of(
        &mut self,
        row: usize,
        keep: Range<usize>,
    ) -> Result<Vec<HostTensor<f32>>> {
        let (at, g) = (&self.at, self.geometry);
        each_type!(&mut self.tensors, tensors => tensors
            .iter_mut()
            .map(|t| read_row(at, g, t, row, keep.clone()))
            .collect())
    }

    /// Removes row `row`: the last row's columns move into its place (rows are unordered).
    pub(super) fn swap_remove(&mut self, row: usize) -> Result<()> {
        let last = self.rows() - 1;
        if row != last {
            let (at, g, len) = (&self.at, self.geometry, self.lens[last]);
            each_type!(&mut self.tensors, tensors => {
                for tensor in tensors.iter_mut() {
                    move_row(at, g, tensor, last, row, len)?;
                }
            });
        }
        self.lens.swap_remove(row);
        Ok(())
    }

    /// Buffers with room for `rows` rows of up to `need` tokens, holding this one's rows.
    pub(super) fn regrown(&mut self, rows: usize, need: usize) -> Result<Self> {
        let dtype = match self.tensors {
            Tensors::F32(_) => FloatDtype::Float32,
            Tensors::F16(_) => FloatDtype::Float16,
        };
        let g = self.geometry;
        let mut out = KvBuffer::with_shape(
            self.names.clone(),
            dtype,
            self.at.clone(),
            [rows.max(self.rows()), g.heads, need.max(g.columns), g.dim],
            self.context,
        )?;
        for row in 0..self.rows() {
            out.push_row_from(self, row)?;
        }
        Ok(out)
    }

    /// Adds a row holding row `row` of `src` (a buffer of the same model): its index. The
    /// columns are copied where the buffers live (in device memory, without a trip through
    /// the host).
    pub(super) fn push_row_from(&mut self, src: &mut KvBuffer, row: usize) -> Result<usize> {
        let to = self.rows();
        if to >= self.geometry.row_capacity || row >= src.rows() {
            return Err(Error::internal("a row moved outside a buffer's rows"));
        }
        let len = src.lens[row];
        if len > self.geometry.columns {
            return Err(Error::internal(
                "a row moved into a buffer too short for it",
            ));
        }
        let from = Side {
            at: &src.at,
            g: src.geometry,
            row,
        };
        let into = Side {
            at: &self.at,
            g: self.geometry,
            row: to,
        };
        match (&mut src.tensors, &mut self.tensors) {
            (Tensors::F32(a), Tensors::F32(b)) => copy_columns(&from, a, &into, b, len)?,
            (Tensors::F16(a), Tensors::F16(b)) => copy_columns(&from, a, &into, b, len)?,
            _ => {
                return Err(Error::internal(
                    "a row moved between buffers of different types",
                ));
            }
        }
        self.lens.push(len);
        Ok(to)
    }

    /// Binds rows `rows` of every buffer as its past input and present output of
    /// `binding`: the same memory, which the graph's attention detects and appends to in
    /// place.
    pub(super) fn bind(&mut self, binding: &mut IoBinding, rows: Range<usize>) -> Result<()> {
        if rows.is_empty() || rows.end > self.geometry.row_capacity {
            return Err(Error::internal("a view outside the buffer's rows"));
        }
        let (at, g) = (&self.at, self.geometry);
        each_type!(&mut self.tensors, tensors => {
            for (tensor, (past, present)) in tensors.iter_mut().zip(&self.names) {
                // SAFETY: `rows` lie within the tensor (checked above), and its memory
                // outlives every run of `binding` that uses the view: the batch rebinds its
                // buffers before every run, and a buffer is replaced or dropped only between
                // runs.
                let view = unsafe { rows_view(at, g, tensor, rows.clone())? };
                bind_input_in_place(binding, past, &view)?;
                binding.bind_output(present.as_str(), view)?;
            }
        });
        Ok(())
    }
}

/// `count` tensors of `shape` at `at`; in host memory zeroed (ONNX Runtime allocates them
/// uninitialized, and the host reads them as slices).
fn allocate<T: Element>(at: &Placement, count: usize, shape: &[usize]) -> Result<Vec<Tensor<T>>> {
    let elements = shape.iter().product::<usize>();
    let allocator = at
        .allocator
        .lock()
        .map_err(|_| Error::internal("a cache allocator poisoned by a panic"))?;
    (0..count)
        .map(|_| {
            let mut t = Tensor::<T>::new(&allocator, shape.to_vec())?;
            if at.in_host {
                // SAFETY: the tensor holds `elements` elements in host memory, zeroed before
                // any slice of them is made (every element type here is valid as zero bytes:
                // floats and integers).
                unsafe { std::ptr::write_bytes(t.data_ptr_mut().cast::<T>(), 0, elements) };
            }
            Ok(t)
        })
        .collect()
}

/// A view of rows `rows` of `tensor`, `[rows.len(), heads, columns, dim]`.
///
/// # Safety
/// As [`view`].
unsafe fn rows_view<'t, T: CacheElement>(
    at: &Placement,
    g: Geometry,
    tensor: &mut Tensor<T>,
    rows: Range<usize>,
) -> Result<TensorRefMut<'t, T>> {
    // SAFETY: the caller's contract.
    unsafe { view(at, tensor, rows.start * g.row_len(), g.shape(rows.len())) }
}

/// A view of `shape` over `tensor`'s elements from `offset` on.
///
/// # Safety
/// The elements must lie within the tensor, and the view must not outlive the tensor's
/// memory. Views of one tensor may coexist: ONNX Runtime reads and writes them as raw
/// memory, never as Rust references.
unsafe fn view<'t, T: CacheElement>(
    at: &Placement,
    tensor: &mut Tensor<T>,
    offset: usize,
    shape: [usize; 4],
) -> Result<TensorRefMut<'t, T>> {
    // `wrapping_add`: in device memory this is an address, not a host allocation.
    let base = tensor.data_ptr_mut().cast::<T>().wrapping_add(offset);
    let shape = Shape::new(shape.map(|d| d as i64));
    // SAFETY: the caller's contract.
    Ok(unsafe { TensorRefMut::from_raw(at.memory.clone(), base.cast(), shape)? })
}

/// One row of a buffer, as a copy's source or target.
struct Side<'a> {
    at: &'a Placement,
    g: Geometry,
    row: usize,
}

/// Copies the first `len` columns of row `from.row` of each of `src` into row `into.row` of
/// the matching tensor of `dst`: slices in host memory; otherwise one copy of the whole row
/// per tensor when the rows are alike, else one per head.
fn copy_columns<T: CacheElement>(
    from: &Side<'_>,
    src: &mut [Tensor<T>],
    into: &Side<'_>,
    dst: &mut [Tensor<T>],
    len: usize,
) -> Result<()> {
    let (fg, ig, dim) = (from.g, into.g, from.g.dim);
    let head = |g: Geometry, row: usize, h: usize| (row * g.heads + h) * g.columns * dim;
    let device = if into.at.in_host {
        from.at.device
    } else {
        into.at.device
    };
    for (s, d) in src.iter_mut().zip(dst.iter_mut()) {
        if from.at.in_host && into.at.in_host {
            let (_, sdata) = s.extract_tensor();
            let (_, ddata) = d.extract_tensor_mut();
            for h in 0..fg.heads {
                let (a, b) = (head(fg, from.row, h), head(ig, into.row, h));
                ddata[b..b + len * dim].copy_from_slice(&sdata[a..a + len * dim]);
            }
        } else if fg.columns == ig.columns {
            // SAFETY: both rows lie within their tensors (checked by the caller); the views
            // live for this call only.
            let (a, b) = unsafe {
                (
                    rows_view(from.at, fg, s, from.row..from.row + 1)?,
                    rows_view(into.at, ig, d, into.row..into.row + 1)?,
                )
            };
            copy(device, &a, b)?;
        } else {
            for h in (0..fg.heads).filter(|_| len > 0) {
                let shape = [1, 1, len, dim];
                // SAFETY: each head's first `len` columns lie within its row (`len` is at
                // most both buffers' columns); the views live for this call only.
                let (a, b) = unsafe {
                    (
                        view(from.at, s, head(fg, from.row, h), shape)?,
                        view(into.at, d, head(ig, into.row, h), shape)?,
                    )
                };
                copy(device, &a, b)?;
            }
        }
    }
    Ok(())
}

/// Writes `src` (`[1, heads, len, dim]`, float32) into the first columns of row `row`.
fn write_row<T: CacheElement>(
    at: &Placement,
    g: Geometry,
    tensor: &mut Tensor<T>,
    row: usize,
    src: &HostTensor<f32>,
) -> Result<()> {
    let len = src.shape[2];
    let fill = |dst: &mut [T]| {
        let stride = g.columns * g.dim;
        for (h, head) in src.data.chunks_exact(len * g.dim).enumerate() {
            let to = &mut dst[h * stride..h * stride + len * g.dim];
            for (d, &x) in to.iter_mut().zip(head) {
                *d = T::from_f32(x);
            }
        }
    };
    if at.in_host {
        let (_, data) = tensor.extract_tensor_mut();
        fill(&mut data[row * g.row_len()..(row + 1) * g.row_len()]);
        return Ok(());
    }
    // A whole row staged in host memory, then copied over the device row.
    let mut staged = host_row::<T>(g)?;
    fill(staged.extract_tensor_mut().1);
    // SAFETY: `row` is below the capacity (checked by the caller); the view lives for this
    // call only.
    let target = unsafe { rows_view(at, g, tensor, row..row + 1)? };
    copy(at.device, &staged, target)
}

/// Row `row`'s columns `keep`, `[1, heads, keep.len(), dim]`, widened to float32.
fn read_row<T: CacheElement>(
    at: &Placement,
    g: Geometry,
    tensor: &mut Tensor<T>,
    row: usize,
    keep: Range<usize>,
) -> Result<HostTensor<f32>> {
    if at.in_host {
        let (_, data) = tensor.extract_tensor();
        return Ok(columns(g.shape(g.row_capacity), data, row, keep));
    }
    let mut host = host_row::<T>(g)?;
    // SAFETY: `row` is below the capacity (the caller's rows in use); the view lives for
    // this call only.
    let source = unsafe { rows_view(at, g, tensor, row..row + 1)? };
    copy(at.device, &source, host.view_mut())?;
    Ok(columns(g.shape(1), host.extract_tensor().1, 0, keep))
}

/// Moves the first `len` columns of row `from` into row `to` (in device memory, the whole
/// row).
fn move_row<T: CacheElement>(
    at: &Placement,
    g: Geometry,
    tensor: &mut Tensor<T>,
    from: usize,
    to: usize,
    len: usize,
) -> Result<()> {
    if at.in_host {
        let (n, stride) = (g.row_len(), g.columns * g.dim);
        let (_, data) = tensor.extract_tensor_mut();
        for h in 0..g.heads {
            let (a, b) = (from * n + h * stride, to * n + h * stride);
            data.copy_within(a..a + len * g.dim, b);
        }
        return Ok(());
    }
    // SAFETY: both rows are below the capacity (rows in use) and distinct; the views live
    // for this call only.
    let (source, target) = unsafe {
        (
            rows_view(at, g, tensor, from..from + 1)?,
            rows_view(at, g, tensor, to..to + 1)?,
        )
    };
    copy(at.device, &source, target)
}

/// One zeroed row, `[1, heads, columns, dim]`, in host memory.
fn host_row<T: CacheElement>(g: Geometry) -> Result<Tensor<T>> {
    let host = Placement {
        allocator: Mutex::new(Allocator::default()),
        memory: cache_memory(Device::Cpu)?,
        in_host: true,
        device: Device::Cpu,
    };
    Ok(allocate(&host, 1, &g.shape(1))?.remove(0))
}

/// Binds `value` as input `name`. `IoBinding::bind_input` copies a value that borrows its
/// memory (as a view does), which would defeat writing the cache in place.
pub(super) fn bind_input_in_place<T: ValueTypeMarker + ?Sized>(
    binding: &mut IoBinding,
    name: &str,
    value: &Value<T>,
) -> Result<()> {
    let name = CString::new(name).map_err(|_| Error::internal("an input name with a NUL byte"))?;
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

#[cfg(test)]
mod tests;
