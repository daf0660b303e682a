//! Decode steps of the static layout the way ONNX Runtime's CUDA graphs need them
//! ([`GeneratorOptions::cuda_graphs`](super::GeneratorOptions::cuda_graphs)): every input and
//! output of a step in a tensor of fixed shape at a fixed address, so that the step's kernel
//! launches can be captured once and replayed.
//!
//! - A step covers every row of its batch's buffers (their row capacity, a power of two):
//!   rows not in use feed token 0 at column 0, which the next row pushed there overwrites.
//!   The mask spans the buffers' full width.
//! - Each step owns its `IoBinding`: the buffers' whole rows as past and present, the
//!   adapter tensors, the token ids, positions, mask and LoRA columns, and both outputs (the
//!   graph's argmax and the logits), all bound once. A step only updates the values of its
//!   inputs, then runs with its own `gpu_graph_id`; ONNX Runtime captures that graph after
//!   one or two plain runs (the count differs between its versions) and replays it from then
//!   on. It keeps graphs and counts runs per thread, so every thread that runs a step
//!   captures it once (`capture::CaptureRuns`); engines with fixed steps run on one thread
//!   each (`engine_thread`), so that is one capture per step.
//! - A step is made for one pair of (buffers, adapter tensors) and replaced when either
//!   changes (rows regrown, a slot loaded), with a new graph id: a captured graph replays the
//!   addresses it was captured with.
//! - Everything a replay reads that outlives a run is allocated from the generator's own
//!   arena (`device_copy::own_allocator`), never the session's: ONNX Runtime hands the
//!   memory of a captured run's intermediate tensors back to the session's arena, where a
//!   later allocation (a newcomer's buffers, say) could take it and be overwritten by the
//!   next replay.
//! - Every other run on a session that captures passes `gpu_graph_id` -1
//!   (`GraphSteps::uncaptured`): ONNX Runtime would capture a run without one as graph 0.
//! - Captures run alone (`capture::DEVICE`): every other device use of the generator waits
//!   for them.
//! - `logits_to_keep` stays unbound (see [`GraphStep::new`]).
//! - Engines keep finished batches' buffers with their steps ([`SpareBuffers`]), so later
//!   batches of the same shape replay the same graphs.
//! - Sampled rows are picked on the device (`device_sampler`) when every row picks plainly.
//! - A capture that fails is reported once (a warning) and steps run uncaptured from then
//!   on; after `capture::MAX_GRAPHS` captures (a graph id on a thread) too: ONNX Runtime
//!   keeps every graph for the session's life.
//!
//! On the CPU (`cuda_graphs: Some(true)`) the same fixed steps run without capture: that is
//! how the tests check what a captured step computes.

use std::sync::Arc;

use ort::session::{IoBinding, NoSelectedOutputs, RunOptions, Session};
use ort::value::{DynValue, Tensor, TensorValueType};

use super::Shared;
use super::batch::LoraMask;
use super::capture::{
    CaptureRuns, GraphSteps, RunKind, device_alone, device_use, run_or_fall_back,
};
use super::device_sampler;
use super::in_place::Readout;
use super::kv_buffer::{CacheElement, KvBuffer, Placement, bind_input_in_place};
use crate::adapter::LoraFeed;
use crate::config::FloatDtype;
use crate::error::{Error, Result};
use crate::sampling::DevicePick;

/// Buffers of finished batches, kept by an engine with their fixed steps, for the next batch
/// of their shape: it reuses their captured graphs instead of capturing new ones (a server
/// whose every request is a batch of its own would otherwise capture a graph per request).
/// They hold their memory while kept: at most [`SPARE_BUFFERS`] of them, within a budget of
/// bytes ([`GeneratorOptions::spare_buffer_bytes`](super::GeneratorOptions)).
pub(super) struct SpareBuffers {
    /// Most recently put last.
    spare: Vec<(KvBuffer, Vec<GraphStep>)>,
    budget: usize,
}

/// Most spare buffers an engine keeps.
const SPARE_BUFFERS: usize = 2;

impl SpareBuffers {
    /// None kept yet, within `budget` bytes.
    pub(super) fn new(budget: usize) -> Self {
        SpareBuffers {
            spare: Vec::new(),
            budget,
        }
    }

    /// Keeps `kv` (emptied) and its steps, unless it alone holds more than the budget; the
    /// least recently put go while there are more than [`SPARE_BUFFERS`] or they hold more.
    pub(super) fn put(&mut self, mut kv: KvBuffer, steps: Vec<GraphStep>) {
        if kv.bytes() > self.budget {
            return; // freed with its steps
        }
        kv.lens.clear();
        self.spare.push((kv, steps));
        while self.spare.len() > SPARE_BUFFERS
            || self.spare.iter().map(|(kv, _)| kv.bytes()).sum::<usize>() > self.budget
        {
            self.spare.remove(0);
        }
    }

    /// A spare buffer of `row_capacity` rows with room for `need` tokens per row (the
    /// narrowest), and its steps.
    pub(super) fn take(
        &mut self,
        row_capacity: usize,
        need: usize,
    ) -> Option<(KvBuffer, Vec<GraphStep>)> {
        let i = self
            .spare
            .iter()
            .enumerate()
            .filter(|(_, (kv, _))| kv.row_capacity() == row_capacity && kv.columns() >= need)
            .min_by_key(|(_, (kv, _))| kv.columns())
            .map(|(i, _)| i)?;
        Some(self.spare.remove(i))
    }

    /// Buffers kept.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.spare.len()
    }
}

/// One batch's fixed decode step (see the module).
pub(super) struct GraphStep {
    /// The buffers ([`KvBuffer::id`]) and adapter tensors (their feed's address) bound.
    key: (u64, usize),
    graph_id: i64,
    captures: CaptureRuns,
    rows: usize,
    columns: usize,
    vocab: usize,
    at: Arc<Placement>,
    binding: IoBinding,
    run: RunOptions<NoSelectedOutputs>,
    ids: Tensor<i64>,
    pos: Option<Tensor<i64>>,
    mask: Tensor<i64>,
    /// `[rows, 1, width]`, of the model's `lora.dtype`, and the width.
    lora_mask: Option<(FloatTensor, usize)>,
    token: Option<Tensor<i64>>,
    logits: Tensor<f32>,
    /// The feed the adapter tensors were copied from, held so that its address (the key)
    /// names no other feed while this step lives.
    _feed: Arc<LoraFeed>,
}

/// A float tensor of either element type the model's LoRA inputs take.
enum FloatTensor {
    F32(Tensor<f32>),
    F16(Tensor<half::f16>),
}

/// What a fixed step feeds its rows in use (the rest are padding).
pub(super) struct StepFeed<'a> {
    /// Each row's latest token.
    pub(super) ids: &'a [i64],
    /// Tokens cached in each row: the latest token's position and column.
    pub(super) lens: &'a [usize],
    pub(super) lora_mask: Option<LoraMask>,
    /// What to read back.
    pub(super) read: StepRead,
}

/// What a fixed step reads back for its rows in use.
pub(super) enum StepRead {
    /// The graph's argmax (every row greedy).
    Argmax,
    /// Tokens the device sampler picks from the logits where they are, each row as its
    /// pick says (every row picks plainly, some sample).
    Sampled(Vec<DevicePick>),
    /// The logits, for the host's samplers.
    Logits,
}

impl GraphStep {
    /// The key of a step over `kv` with `feed`'s adapter tensors: the feed's address (a
    /// step holds its feed, so the address is not reused while the step lives), 0 for the
    /// base model's empty feed (every empty feed binds the same: nothing).
    pub(super) fn key(kv: &KvBuffer, feed: &Arc<LoraFeed>) -> (u64, usize) {
        let feed = if feed.inputs.is_empty() {
            0
        } else {
            Arc::as_ptr(feed) as usize
        };
        (kv.id(), feed)
    }

    /// The step's key.
    pub(super) fn key_of(&self) -> (u64, usize) {
        self.key
    }

    /// A step over every row of `kv`, with `feed`'s adapter tensors and LoRA columns of
    /// `lora_width` (when rows go through adapter slots), bound once.
    pub(super) fn new(
        shared: &Shared,
        steps: &GraphSteps,
        session: &Session,
        kv: &mut KvBuffer,
        feed: &Arc<LoraFeed>,
        lora_width: Option<usize>,
    ) -> Result<Self> {
        let cfg = &shared.config;
        let (rows, columns, vocab) = (kv.row_capacity(), kv.columns(), cfg.vocab_size);
        let at = kv.placement();
        let mut binding = session.create_binding()?;
        for (name, value) in &feed.inputs {
            bind_copy(&at, &mut binding, name, value)?;
        }
        let ids = at.tensor::<i64>(&[rows, 1])?;
        bind_input_in_place(&mut binding, &cfg.inputs.input_ids, &ids)?;
        let mask = at.tensor::<i64>(&[rows, columns])?;
        bind_input_in_place(&mut binding, &cfg.inputs.attention_mask, &mask)?;
        let pos = match &cfg.inputs.position_ids {
            Some(p) if shared.graph_inputs.contains(p) => {
                let t = at.tensor::<i64>(&[rows, 1])?;
                bind_input_in_place(&mut binding, p, &t)?;
                Some(t)
            }
            _ => None,
        };
        let lora_mask = match (&shared.lora_mask, lora_width) {
            (Some(name), Some(width)) => {
                let shape = [rows, 1, width];
                let t = match cfg.lora.dtype {
                    FloatDtype::Float32 => {
                        let t = at.tensor::<f32>(&shape)?;
                        bind_input_in_place(&mut binding, name, &t)?;
                        FloatTensor::F32(t)
                    }
                    FloatDtype::Float16 => {
                        let t = at.tensor::<half::f16>(&shape)?;
                        bind_input_in_place(&mut binding, name, &t)?;
                        FloatTensor::F16(t)
                    }
                };
                Some((t, width))
            }
            _ => None,
        };
        // `logits_to_keep` stays unbound: its default keeps every position, here the one. The
        // graph reads it on the host (a `Min` and a `Neg` give a `Slice` its start), where a
        // replay runs nothing: the value a capture saw would stay in its graph.
        // Both outputs, always: a captured graph writes the outputs it was captured with.
        let token = match &cfg.outputs.next_token {
            Some(name) => {
                let mut t = at.tensor::<i64>(&[rows, 1])?;
                binding.bind_output(name.as_str(), t.view_mut())?;
                Some(t)
            }
            None => None,
        };
        let mut logits = at.tensor::<f32>(&[rows, 1, vocab])?;
        binding.bind_output(cfg.outputs.logits.as_str(), logits.view_mut())?;
        kv.bind(&mut binding, 0..rows)?;
        let graph_id = steps.next_graph();
        let mut run = RunOptions::new()?;
        if steps.sessions_capture {
            run.set("gpu_graph_id", graph_id.to_string())?;
        }
        Ok(GraphStep {
            key: Self::key(kv, feed),
            graph_id,
            captures: CaptureRuns::default(),
            rows,
            columns,
            vocab,
            at,
            binding,
            run,
            ids,
            pos,
            mask,
            lora_mask,
            token,
            logits,
            _feed: feed.clone(),
        })
    }

    /// Runs the step: writes `x` into the step's inputs (padding the rows not in use),
    /// runs, and reads back the rows in use. A captured run that fails is reported
    /// ([`GraphSteps`]) and run again uncaptured; the step stays uncaptured.
    pub(super) fn run(
        &mut self,
        steps: &GraphSteps,
        session: &mut Session,
        x: StepFeed<'_>,
    ) -> Result<Readout> {
        let n = x.lens.len();
        if n > self.rows || x.ids.len() != n {
            return Err(Error::internal("a fixed step fed rows it does not hold"));
        }
        if x.lens.iter().any(|&l| l >= self.columns) {
            return Err(Error::internal("a fixed step past its buffers' columns"));
        }
        self.write_inputs(&x)?;
        let mut graph_id = self.graph_id;
        let ran = run_or_fall_back(steps, &mut graph_id, |id| self.run_once(id, steps, session));
        self.graph_id = graph_id;
        ran?;
        self.read(n, x.read)
    }

    /// One run with graph `graph_id` (-1: uncaptured).
    fn run_once(&mut self, graph_id: i64, steps: &GraphSteps, session: &mut Session) -> Result<()> {
        let kind = self.captures.next(graph_id, steps);
        let capture = kind == RunKind::Capture;
        let _alone = capture.then(device_alone);
        let _shared = (!capture).then(device_use);
        let options = match kind {
            RunKind::Plain => steps.uncaptured().unwrap_or(&self.run),
            RunKind::Capture | RunKind::Replay => &self.run,
        };
        session.run_binding_with_options(&self.binding, options)?;
        Ok(())
    }

    fn write_inputs(&mut self, x: &StepFeed<'_>) -> Result<()> {
        let (rows, width) = (self.rows, self.columns);
        let mut ids = vec![0i64; rows];
        ids[..x.ids.len()].copy_from_slice(x.ids);
        let mut pos = vec![0i64; rows];
        // Rows not in use attend to their column 0 (the graph takes a row's length from its
        // mask, and a row of none would be out of its range).
        let mut mask = vec![0i64; rows * width];
        for r in 0..rows {
            let len = x.lens.get(r).copied().unwrap_or(0);
            pos[r] = len as i64;
            mask[r * width..r * width + len + 1].fill(1);
        }
        self.at.write(&mut self.ids, &ids)?;
        self.at.write(&mut self.mask, &mask)?;
        if let Some(t) = &mut self.pos {
            self.at.write(t, &pos)?;
        }
        match (&mut self.lora_mask, &x.lora_mask) {
            (Some((t, width)), Some((m, w))) if w == width => {
                let mut all = vec![0f32; rows * *width];
                all[..m.len()].copy_from_slice(m);
                match t {
                    FloatTensor::F32(t) => self.at.write(t, &all)?,
                    FloatTensor::F16(t) => {
                        let half: Vec<half::f16> =
                            all.into_iter().map(half::f16::from_f32).collect();
                        self.at.write(t, &half)?;
                    }
                }
            }
            (None, None) => {}
            _ => {
                return Err(Error::internal(
                    "a fixed step fed LoRA columns of another width",
                ));
            }
        }
        Ok(())
    }

    /// The first `n` rows' picks or logits.
    fn read(&mut self, n: usize, read: StepRead) -> Result<Readout> {
        let mut all = match read {
            StepRead::Argmax => {
                let t = self.token.as_mut().ok_or_else(|| {
                    Error::internal("graph picks asked of a graph without next_token")
                })?;
                self.at.read(t)?
            }
            StepRead::Sampled(picks) => {
                return Ok(Readout::Tokens(device_sampler::sample(
                    self.at.device(),
                    &self.logits,
                    &picks,
                )?));
            }
            StepRead::Logits => {
                let mut all = self.at.read(&mut self.logits)?;
                all.truncate(n * self.vocab);
                return Ok(Readout::Logits(all));
            }
        };
        all.truncate(n);
        Ok(Readout::Tokens(all))
    }
}

/// Binds a copy of `value` (an adapter tensor in host memory) in `at`'s memory as input
/// `name`.
fn bind_copy(at: &Placement, binding: &mut IoBinding, name: &str, value: &DynValue) -> Result<()> {
    fn typed<T: CacheElement>(
        at: &Placement,
        binding: &mut IoBinding,
        name: &str,
        value: &DynValue,
    ) -> Result<()> {
        let src = value.view().downcast::<TensorValueType<T>>()?;
        let shape: Vec<usize> = src.shape().iter().map(|&d| d as usize).collect();
        let mut copy = at.tensor::<T>(&shape)?;
        let _use = device_use();
        src.copy_into(&mut copy)?;
        bind_input_in_place(binding, name, &copy)
    }
    if value.try_extract_tensor::<f32>().is_ok() {
        typed::<f32>(at, binding, name, value)
    } else {
        typed::<half::f16>(at, binding, name, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::Device;

    /// Spare buffers come back by row capacity, the narrowest that holds the tokens asked
    /// for, emptied; past two, or past the budget of bytes, the least recently kept goes.
    #[test]
    fn spare_buffers_come_back_by_shape_within_their_budget() {
        let _ort = tribute_common::ort_library::environment().expect("ONNX Runtime");
        let at = Placement::of(Device::Cpu).expect("host memory");
        let names = || vec![("p0".into(), "q0".into()), ("p1".into(), "q1".into())];
        let buffer = |rows: usize, need: usize| {
            let mut kv = KvBuffer::with_shape(
                names(),
                FloatDtype::Float32,
                at.clone(),
                [rows, 1, need, 2],
                1000,
            )
            .expect("alloc");
            kv.push_row(None).expect("a row");
            kv
        };
        // 2 tensors × rows × 1 head × columns (multiples of 64) × 2 × 4 bytes
        assert_eq!(buffer(4, 200).bytes(), 2 * 4 * 256 * 2 * 4);
        let (wide, narrow, other) = (buffer(4, 200), buffer(4, 60), buffer(2, 60));
        let ids = [wide.id(), narrow.id(), other.id()];
        let mut spares = SpareBuffers::new(usize::MAX);
        spares.put(wide, Vec::new());
        spares.put(narrow, Vec::new());
        assert!(spares.take(8, 10).is_none(), "no buffer of 8 rows");
        let (kv, _) = spares.take(4, 10).expect("a 4-row buffer");
        assert_eq!((kv.id(), kv.rows()), (ids[1], 0), "the narrowest, emptied");
        spares.put(kv, Vec::new());
        spares.put(other, Vec::new());
        assert_eq!(
            spares.len(),
            2,
            "the least recently kept (the wide one) went"
        );
        assert!(spares.take(4, 100).is_none());
        assert_eq!(spares.take(2, 64).map(|(kv, _)| kv.id()), Some(ids[2]));

        // A budget of 6 KiB: a wide 4-row buffer (16 KiB) is not kept and leaves the others
        // alone; a 2-row one (2 KiB) and a narrow 4-row one (4 KiB) fit; another narrow
        // 4-row one pushes out the 2-row one (two at most), then the first 4-row one too
        // (8 KiB > 6 KiB).
        let (narrow4, narrow2) = (buffer(4, 60), buffer(2, 60));
        assert_eq!((narrow4.bytes(), narrow2.bytes()), (4096, 2048));
        let mut spares = SpareBuffers::new(6144);
        spares.put(narrow2, Vec::new());
        spares.put(narrow4, Vec::new());
        spares.put(buffer(4, 200), Vec::new());
        assert_eq!(
            spares.len(),
            2,
            "the one over the budget alone was dropped by itself"
        );
        let newest = buffer(4, 60);
        let newest_id = newest.id();
        spares.put(newest, Vec::new());
        assert_eq!(spares.len(), 1, "both older ones went");
        assert_eq!(spares.take(4, 60).map(|(kv, _)| kv.id()), Some(newest_id));
        assert!(SpareBuffers::new(0).take(4, 1).is_none());
        let mut none = SpareBuffers::new(0);
        none.put(buffer(1, 1), Vec::new());
        assert_eq!(none.len(), 0, "a budget of 0 keeps nothing");
    }
}
