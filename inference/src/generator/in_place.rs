//! A running batch in the static layout (`--ops static`): every row's keys and values in
//! fixed buffers ([`KvBuffer`]), right-padded (a token's column is its position), written in
//! place by the graph. A decode step feeds every row its own next column and copies nothing
//! (the padded layouts copy the whole past into the present every step); a prefill runs each
//! new row alone, straight into its row of the buffers; rows leave by the last row moving
//! into their place, and join by their columns being copied in.

use std::ops::Range;
use std::time::Instant;

use ort::session::{IoBinding, Session};

use super::batch::{Batch, CachedPrefix};
use super::capture::{GraphSteps, device_use};
use super::forward::{Inputs, cache_memory, kept_logits, named_inputs};
use super::graph_step::{GraphStep, SpareBuffers, StepFeed, StepRead};
use super::kv_buffer::{KvBuffer, Placement};
use super::row::Row;
use super::slots::SlotBank;
use super::{Device, Shared};
use crate::error::{Error, Result};
use crate::registry::Activation;
use crate::sampling::DevicePick;

impl Batch {
    /// Runs each prompt alone into its own row of new buffers (after the keys and values of
    /// its `cached` prefix, copied in), keeps the prompts asked for, and samples each row's
    /// first token.
    pub(super) fn prefill_in_place(
        &mut self,
        shared: &Shared,
        session: &mut Session,
        bank: Option<&SlotBank>,
        spares: &mut SpareBuffers,
        cached: Option<CachedPrefix>,
    ) -> Result<()> {
        if matches!(self.activation, Activation::RunOptions(_)) {
            return Err(no_run_options());
        }
        let cfg = &shared.config;
        let b = self.rows.len();
        if cached.is_some() && b != 1 {
            return Err(Error::InvalidRequest(
                "internal: a cached prefix is for a batch of one row".into(),
            ));
        }
        let need = self.rows.iter().map(row_need).max().unwrap_or(1);
        // With fixed steps: rows in a power of two, and a finished batch's buffers of that
        // shape (with their steps and graphs) when the engine kept some.
        let spare = match &shared.graph_steps {
            Some(_) => spares.take(GraphSteps::row_capacity(b), need),
            None => None,
        };
        let mut kv = match spare {
            Some((kv, steps)) => {
                self.steps = steps;
                kv
            }
            None => {
                let rows = match &shared.graph_steps {
                    Some(_) => GraphSteps::row_capacity(b),
                    None => b,
                };
                KvBuffer::new(cfg, Placement::of(shared.device)?, rows, need)?
            }
        };
        let (_, lora_mask) = self.pass_activation(session, bank, true)?;
        let argmax = self.argmax_picks(shared);
        let mut out = Readout::new(argmax);
        let mut cached = cached;
        for i in 0..b {
            let prefix = cached.take();
            let r = kv.push_row(prefix.as_ref().map(|(_, layers)| layers.as_slice()))?;
            let reused = kv.lens[r];
            let context = &self.rows[i].context;
            let len = context.len();
            // `prefill_chunk` columns a pass, each over the columns before it in the buffer
            // (the passes before the last pick nothing: their readout is dropped)
            let chunk = match shared.prefill_chunk {
                0 => len,
                c => c,
            };
            let mut start = reused;
            while start < len {
                let end = (start + chunk).min(len);
                // The row attends to its first `end` columns: the graph reads its length there.
                let mask = vec![1; end];
                let pass = Inputs {
                    ids: context[start..end].iter().map(|&t| i64::from(t)).collect(),
                    pos: (start as i64..end as i64).collect(),
                    mask: &mask,
                    batch: 1,
                    seq: end - start,
                    total: end,
                    past: Vec::new(),
                    lora_mask: lora_mask
                        .as_ref()
                        .map(|(m, w)| (m[i * w..(i + 1) * w].to_vec(), *w)),
                };
                let binding = self.binding.as_mut().ok_or_else(no_binding)?;
                let mut dropped = Readout::new(argmax);
                let read = if end == len { &mut out } else { &mut dropped };
                run_in_place(shared, session, binding, &mut kv, r..r + 1, pass, read)?;
                kv.lens[r] = end;
                start = end;
            }
            if self.rows[i].keep_prompt_cache && shared.prompt_cache.enabled() {
                let (set, activation) = self.weights_of(&self.rows[i]);
                let layers = kv.columns_of(r, 0..len)?;
                shared
                    .prompt_cache
                    .insert(set, activation, context.clone(), layers);
            }
        }
        self.kv = Some(kv);
        self.pick(shared, out)
    }

    /// One decode step: each row's latest token goes into its own next column. Rows that
    /// finished (until they are retired) feed theirs again into the same column.
    pub(super) fn decode_in_place(
        &mut self,
        shared: &Shared,
        session: &mut Session,
        bank: Option<&SlotBank>,
        t0: Instant,
    ) -> Result<()> {
        // Fixed steps bind their own copies of the adapter tensors: the prefill's binding
        // (copies of them too, on a device) is not needed again.
        let fixed = shared.graph_steps.is_some();
        if fixed {
            self.binding = None;
        }
        let (activation, lora_mask) = self.pass_activation(session, bank, !fixed)?;
        let mut kv = self.kv.take().ok_or_else(no_buffer)?;
        let ids: Vec<i64> = self
            .rows
            .iter()
            .map(|r| i64::from(*r.context.last().unwrap_or(&0)))
            .collect();
        let tokens = self.argmax_picks(shared);
        let result = match &shared.graph_steps {
            Some(steps) => {
                let read = match (tokens, self.device_picks()) {
                    (true, _) => StepRead::Argmax,
                    (false, Some(picks)) => StepRead::Sampled(picks),
                    (false, None) => StepRead::Logits,
                };
                let feed = StepFeed {
                    ids: &ids,
                    lens: &kv.lens.clone(),
                    lora_mask,
                    read,
                };
                self.fixed_step(shared, steps, session, &mut kv, &activation, feed)
            }
            None => {
                let rows = kv.rows();
                let width = kv.columns();
                let mut mask = vec![0; rows * width];
                for (r, &len) in kv.lens.iter().enumerate() {
                    mask[r * width..r * width + len + 1].fill(1);
                }
                let pass = Inputs {
                    ids,
                    pos: kv.lens.iter().map(|&l| l as i64).collect(),
                    mask: &mask,
                    batch: rows,
                    seq: 1,
                    total: width,
                    past: Vec::new(),
                    lora_mask,
                };
                let mut out = Readout::new(tokens);
                let binding = self.binding.as_mut().ok_or_else(no_binding)?;
                run_in_place(shared, session, binding, &mut kv, 0..rows, pass, &mut out)
                    .map(|()| out)
            }
        };
        let live: Vec<bool> = self.rows.iter().map(Row::live).collect();
        for (len, &live) in kv.lens.iter_mut().zip(&live) {
            *len += usize::from(live);
        }
        self.kv = Some(kv);
        self.pick(shared, result?)?;
        let took = t0.elapsed();
        for (r, was_live) in self.rows.iter_mut().zip(live) {
            if was_live {
                r.timings.decode += took;
            }
        }
        Ok(())
    }

    /// Appends each running row's next token: picked from its logits by its sampler, or
    /// by the graph.
    fn pick(&mut self, shared: &Shared, out: Readout) -> Result<()> {
        match out {
            Readout::Logits(logits) => self.sample(shared, &logits),
            Readout::Tokens(tokens) => self.take_picks(shared, &tokens),
        }
    }

    /// Every row's pick for the device sampler (a greedy placeholder for rows that
    /// finished), each sampling row's uniform number drawn; `None` (nothing drawn) unless
    /// every running row picks plainly.
    fn device_picks(&mut self) -> Option<Vec<DevicePick>> {
        let running = self.rows.iter().filter(|r| r.live());
        if !running.clone().all(|r| r.sampler.picks_plainly()) {
            return None;
        }
        self.rows
            .iter_mut()
            .map(|r| match r.live() {
                true => r.sampler.device_pick(),
                false => Some(DevicePick::GREEDY),
            })
            .collect()
    }

    /// The batch's fixed decode step over `kv` with `activation`'s adapter tensors (made,
    /// with a graph of its own, the first time this pair runs), run.
    fn fixed_step(
        &mut self,
        shared: &Shared,
        steps: &GraphSteps,
        session: &mut Session,
        kv: &mut KvBuffer,
        activation: &Activation,
        feed: StepFeed<'_>,
    ) -> Result<Readout> {
        let Activation::Feed(adapters) = activation else {
            return Err(no_run_options());
        };
        let key = GraphStep::key(kv, adapters);
        let at = match self.steps.iter().position(|s| s.key_of() == key) {
            Some(i) => i,
            None => {
                // Steps over replaced buffers never run again.
                self.steps.retain(|s| s.key_of().0 == key.0);
                if self.steps.len() >= STEPS_PER_BATCH {
                    self.steps.remove(0);
                }
                let width = feed.lora_mask.as_ref().map(|(_, w)| *w);
                let step = GraphStep::new(shared, steps, session, kv, adapters, width)?;
                self.steps.push(step);
                self.steps.len() - 1
            }
        };
        // Most recently used last.
        self.steps[at..].rotate_left(1);
        let step = self.steps.last_mut().ok_or_else(no_buffer)?;
        step.run(steps, session, feed)
    }

    /// Drops the finished rows: the last row moves into each one's place.
    pub(super) fn retire_in_place(&mut self) -> Result<()> {
        if self.live() == 0 {
            // The buffers and steps stay for the engine to keep (`Engine::drop_finished`).
            self.rows.clear();
            self.binding = None;
            return Ok(());
        }
        let Some(kv) = self.kv.as_mut() else {
            return Ok(());
        };
        // From the end: the row that moves into a hole was looked at already, and is live.
        for i in (0..self.rows.len()).rev() {
            if !self.rows[i].live() {
                self.rows.swap_remove(i);
                kv.swap_remove(i)?;
            }
        }
        Ok(())
    }

    /// Copies the running rows of `newcomers` (prefilled in the static layout) into this
    /// batch's buffers, regrown first if they lack rows or columns. On failure every row of
    /// every side is answered with the error.
    pub(super) fn absorb_in_place(
        &mut self,
        shared: &Shared,
        mut newcomers: Vec<Batch>,
    ) -> Result<()> {
        let result = self.copy_in(shared, &mut newcomers);
        if let Err(e) = &result {
            self.fail(e);
            for side in &mut newcomers {
                side.fail(e);
            }
        }
        result
    }

    fn copy_in(&mut self, shared: &Shared, newcomers: &mut [Batch]) -> Result<()> {
        let fixed_steps = shared.graph_steps.is_some();
        let incoming = newcomers.iter().map(Batch::live).sum::<usize>();
        let need = self
            .rows
            .iter()
            .chain(newcomers.iter().flat_map(|b| &b.rows))
            .filter(|r| r.live())
            .map(row_need)
            .max()
            .unwrap_or(1);
        let kv = self.kv.as_mut().ok_or_else(no_buffer)?;
        if !kv.fits(incoming, need) {
            let mut rows = kv.rows() + incoming;
            if fixed_steps {
                rows = GraphSteps::row_capacity(rows);
            }
            *kv = kv.regrown(rows, need)?;
            // Their binding's views point into the buffers just replaced.
            self.steps.clear();
        }
        for side in newcomers.iter_mut() {
            let Some(mut theirs) = side.kv.take() else {
                return Err(no_buffer());
            };
            for (i, row) in std::mem::take(&mut side.rows).into_iter().enumerate() {
                if row.live() {
                    kv.push_row_from(&mut theirs, i)?;
                    self.rows.push(row);
                }
            }
        }
        Ok(())
    }
}

/// Fixed steps a batch keeps (one per set of adapter tensors it ran with lately: rows
/// going through slots and base-model rows alone alternate between two).
const STEPS_PER_BATCH: usize = 4;

/// Columns a row may fill: its prompt and every token it may still generate.
fn row_need(row: &Row) -> usize {
    row.context.len() - row.generated.len() + row.max_tokens
}

/// What forward passes in place read back, row after row: `[rows, vocab]` logits of each
/// row's last position, or (when every row takes the argmax) the graph's `next_token` for
/// it, so only token ids leave the device.
pub(super) enum Readout {
    Logits(Vec<f32>),
    Tokens(Vec<i64>),
}

impl Readout {
    fn new(tokens: bool) -> Self {
        if tokens {
            Readout::Tokens(Vec::new())
        } else {
            Readout::Logits(Vec::new())
        }
    }
}

/// One forward pass over rows `rows` of `kv`, which it writes in place (`x` carries no
/// past): appends to `out` the logits of each row's last position, or the graph's pick for
/// it.
fn run_in_place(
    shared: &Shared,
    session: &mut Session,
    binding: &mut IoBinding,
    kv: &mut KvBuffer,
    rows: Range<usize>,
    x: Inputs<'_>,
    out: &mut Readout,
) -> Result<()> {
    let batch = x.batch;
    let (inputs, _) = named_inputs(shared, x, 1)?;
    for (name, v) in &inputs {
        binding.bind_input(name.as_str(), v)?;
    }
    binding.clear_outputs();
    let cfg = &shared.config;
    let picks = match out {
        Readout::Tokens(_) => cfg.outputs.next_token.as_deref(),
        Readout::Logits(_) => None,
    };
    let read = picks.unwrap_or(cfg.outputs.logits.as_str());
    binding.bind_output_to_device(read, &cache_memory(Device::Cpu)?)?;
    kv.bind(binding, rows)?;
    let _use = device_use();
    let outputs = match shared.uncaptured() {
        Some(opts) => session.run_binding_with_options(binding, opts)?,
        None => session.run_binding(binding)?,
    };
    match (picks, out) {
        (Some(name), Readout::Tokens(tokens)) => {
            let (_, ids) = outputs[name].try_extract_tensor::<i64>()?;
            if ids.len() != batch {
                return Err(Error::InvalidRequest(format!(
                    "internal: {} picked tokens for {batch} rows",
                    ids.len()
                )));
            }
            tokens.extend_from_slice(ids);
        }
        (_, Readout::Logits(logits)) => logits.extend(kept_logits(shared, &outputs, batch, 1)?),
        (None, Readout::Tokens(_)) => {
            return Err(Error::InvalidRequest(
                "internal: graph picks asked of a graph without next_token".into(),
            ));
        }
    }
    Ok(())
}

fn no_run_options() -> Error {
    Error::InvalidRequest(
        "`.onnx_adapter` adapters are applied through ONNX Runtime's run options, which it \
         honours only in runs without an IoBinding; the static layout writes its cache through \
         one. Use a PEFT adapter, or a portable or fused export"
            .into(),
    )
}

fn no_binding() -> Error {
    Error::internal("a static-layout batch without its binding")
}

fn no_buffer() -> Error {
    Error::internal("a static-layout batch without its buffers")
}
