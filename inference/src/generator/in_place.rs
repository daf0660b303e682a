//! A running batch in the static layout (`--ops static`): every row's keys and values in
//! fixed buffers ([`KvBuffer`]), right-padded (a token's column is its position), written in
//! place by the graph. A decode step feeds every row its own next column and copies nothing
//! (the padded layouts copy the whole past into the present every step); a prefill runs each
//! new row alone, straight into its row of the buffers; rows leave by the last row moving
//! into their place, and join by their columns being copied in.

use std::ops::Range;
use std::time::Instant;

use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, Session};
use ort::value::Tensor;

use super::Shared;
use super::batch::{Batch, CachedPrefix};
use super::kv_buffer::KvBuffer;
use super::row::Row;
use super::slots::SlotBank;
use crate::config::layer_name;
use crate::error::{Error, Result};
use crate::registry::Activation;

/// The inputs of one in-place pass over rows `rows` of the buffers, `seq` new tokens each.
struct Pass<'a> {
    rows: Range<usize>,
    seq: usize,
    /// `[rows, seq]` token ids and positions.
    ids: Vec<i64>,
    pos: Vec<i64>,
    /// `[rows, width]`: row r attends to its first `sum` columns (its cached tokens and the
    /// new ones), which is where the graph takes each row's length from.
    mask: Vec<i64>,
    width: usize,
    /// With adapter slots: `[rows, 1, width]` LoRA columns and the width.
    lora_mask: Option<(&'a [f32], usize)>,
}

impl Batch {
    /// Runs each prompt alone into its own row of new buffers (after the keys and values of
    /// its `cached` prefix, copied in), keeps the prompts asked for, and samples each row's
    /// first token.
    pub(super) fn prefill_in_place(
        &mut self,
        shared: &Shared,
        session: &mut Session,
        bank: Option<&SlotBank>,
        cached: Option<CachedPrefix>,
    ) -> Result<()> {
        if matches!(self.activation, Activation::RunOptions(_)) {
            return Err(Error::InvalidRequest(
                "`.onnx_adapter` adapters are applied through ONNX Runtime's run options, which \
                 it honours only in runs without an IoBinding; the static layout writes its cache \
                 through one. Use a PEFT adapter, or a portable or fused export"
                    .into(),
            ));
        }
        let cfg = &shared.config;
        let b = self.rows.len();
        if cached.is_some() && b != 1 {
            return Err(Error::InvalidRequest(
                "internal: a cached prefix is for a batch of one row".into(),
            ));
        }
        let need = self.rows.iter().map(row_need).max().unwrap_or(1);
        let mut kv = KvBuffer::new(cfg, b, need)?;
        let (_, lora_mask) = self.pass_activation(session, bank, true)?;
        let v = cfg.vocab_size;
        let mut logits = Vec::with_capacity(b * v);
        let mut cached = cached;
        for i in 0..b {
            let prefix = cached.take();
            let r = kv.push_row(prefix.as_ref().map(|(_, layers)| layers.as_slice()))?;
            let reused = kv.lens[r];
            let context = &self.rows[i].context;
            let len = context.len();
            let pass = Pass {
                rows: r..r + 1,
                seq: len - reused,
                ids: context[reused..].iter().map(|&t| i64::from(t)).collect(),
                pos: (reused as i64..len as i64).collect(),
                mask: vec![1; len],
                width: len,
                lora_mask: lora_mask
                    .as_ref()
                    .map(|(m, w)| (&m[i * w..(i + 1) * w], *w)),
            };
            let binding = self.binding.as_mut().ok_or_else(no_binding)?;
            logits.extend(run_in_place(shared, session, binding, &mut kv, pass)?);
            kv.lens[r] = len;
            if self.rows[i].keep_prompt_cache && shared.prompt_cache.enabled() {
                let (set, activation) = self.weights_of(&self.rows[i]);
                let layers = kv.columns_of(r, 0..len);
                shared
                    .prompt_cache
                    .insert(set, activation, context.clone(), layers);
            }
        }
        self.total = kv.lens.iter().copied().max().unwrap_or(0);
        self.kv = Some(kv);
        self.sample(shared, &logits)
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
        let (_, lora_mask) = self.pass_activation(session, bank, true)?;
        let mut kv = self.kv.take().ok_or_else(no_buffer)?;
        let rows = kv.rows();
        let width = kv.columns();
        let mut mask = vec![0; rows * width];
        for (r, &len) in kv.lens.iter().enumerate() {
            mask[r * width..r * width + len + 1].fill(1);
        }
        let pass = Pass {
            rows: 0..rows,
            seq: 1,
            ids: self
                .rows
                .iter()
                .map(|r| i64::from(*r.context.last().unwrap_or(&0)))
                .collect(),
            pos: kv.lens.iter().map(|&l| l as i64).collect(),
            mask,
            width,
            lora_mask: lora_mask.as_ref().map(|(m, w)| (m.as_slice(), *w)),
        };
        let binding = self.binding.as_mut().ok_or_else(no_binding)?;
        let result = run_in_place(shared, session, binding, &mut kv, pass);
        let live: Vec<bool> = self.rows.iter().map(Row::live).collect();
        for (len, &live) in kv.lens.iter_mut().zip(&live) {
            *len += usize::from(live);
        }
        self.total = kv.lens.iter().copied().max().unwrap_or(0);
        self.kv = Some(kv);
        let logits = result?;
        self.sample(shared, &logits)?;
        let took = t0.elapsed();
        for (r, was_live) in self.rows.iter_mut().zip(live) {
            if was_live {
                r.timings.decode += took;
            }
        }
        Ok(())
    }

    /// Drops the finished rows: the last row moves into each one's place.
    pub(super) fn retire_in_place(&mut self) {
        if self.live() == 0 {
            self.rows.clear();
            self.kv = None;
            self.binding = None;
            return;
        }
        let Some(kv) = self.kv.as_mut() else {
            return;
        };
        // From the end: the row that moves into a hole was looked at already, and is live.
        for i in (0..self.rows.len()).rev() {
            if !self.rows[i].live() {
                self.rows.swap_remove(i);
                kv.swap_remove(i);
            }
        }
    }

    /// Copies the running rows of `newcomers` (prefilled in the static layout) into this
    /// batch's buffers, regrown first if they lack rows or columns. On failure every row of
    /// every side is answered with the error.
    pub(super) fn absorb_in_place(&mut self, mut newcomers: Vec<Batch>) -> Result<()> {
        let result = self.copy_in(&mut newcomers);
        if let Err(e) = &result {
            self.fail(e);
            for side in &mut newcomers {
                side.fail(e);
            }
        }
        result
    }

    fn copy_in(&mut self, newcomers: &mut [Batch]) -> Result<()> {
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
            *kv = kv.regrown(kv.rows() + incoming, need)?;
        }
        for side in newcomers.iter_mut() {
            let Some(theirs) = side.kv.take() else {
                return Err(no_buffer());
            };
            for (i, row) in std::mem::take(&mut side.rows).into_iter().enumerate() {
                if row.live() {
                    let layers = theirs.columns_of(i, 0..theirs.lens[i]);
                    kv.push_row(Some(&layers))?;
                    self.rows.push(row);
                }
            }
        }
        self.total = kv.lens.iter().copied().max().unwrap_or(0);
        Ok(())
    }
}

/// Columns a row may fill: its prompt and every token it may still generate.
fn row_need(row: &Row) -> usize {
    row.context.len() - row.generated.len() + row.max_tokens
}

/// One forward pass writing rows `x.rows` of `kv` in place: the logits of each row's last
/// position, `[rows, vocab]`.
fn run_in_place(
    shared: &Shared,
    session: &mut Session,
    binding: &mut IoBinding,
    kv: &mut KvBuffer,
    x: Pass<'_>,
) -> Result<Vec<f32>> {
    let cfg = &shared.config;
    let b = x.rows.len();
    binding.bind_input(
        cfg.inputs.input_ids.as_str(),
        &Tensor::from_array(([b, x.seq], x.ids))?,
    )?;
    binding.bind_input(
        cfg.inputs.attention_mask.as_str(),
        &Tensor::from_array(([b, x.width], x.mask))?,
    )?;
    if let Some(p) = cfg
        .inputs
        .position_ids
        .as_ref()
        .filter(|p| shared.graph_inputs.contains(*p))
    {
        binding.bind_input(p.as_str(), &Tensor::from_array(([b, x.seq], x.pos))?)?;
    }
    if let (Some(name), Some((mask, width))) = (&shared.lora_mask, x.lora_mask) {
        binding.bind_input(
            name.as_str(),
            &Tensor::from_array(([b, 1, width], mask.to_vec()))?,
        )?;
    }
    if let Some(name) = &shared.logits_to_keep {
        binding.bind_input(name.as_str(), &Tensor::from_array(([1usize], vec![1i64]))?)?;
    }
    binding.clear_outputs();
    let host = MemoryInfo::new(
        AllocationDevice::CPU,
        0,
        AllocatorType::Device,
        MemoryType::Default,
    )?;
    binding.bind_output_to_device(cfg.outputs.logits.as_str(), &host)?;
    let names = |k: &String, v: &String| -> Vec<String> {
        (0..cfg.num_layers)
            .flat_map(|i| [layer_name(k, i), layer_name(v, i)])
            .collect()
    };
    let past = names(&cfg.inputs.past_key, &cfg.inputs.past_value);
    let present = names(&cfg.outputs.present_key, &cfg.outputs.present_value);
    kv.bind(binding, &past, &present, x.rows)?;
    let outputs = session.run_binding(binding)?;
    let logits = outputs
        .get(&cfg.outputs.logits)
        .ok_or_else(|| Error::InvalidRequest("the model returned no logits".into()))?;
    let (shape, data) = logits.try_extract_tensor::<f32>()?;
    let v = cfg.vocab_size;
    let s = shape.get(1).copied().unwrap_or(0) as usize;
    if shape.len() != 3 || shape[0] as usize != b || shape[2] as usize != v || s == 0 {
        return Err(Error::model_dir(
            &shared.dir,
            format!("logits have shape {shape:?}, expected [{b}, 1, {v}]"),
        ));
    }
    // The last position of each row (a graph without `logits_to_keep` returns them all).
    let mut last = Vec::with_capacity(b * v);
    for r in 0..b {
        let off = (r * s + s - 1) * v;
        last.extend_from_slice(&data[off..off + v]);
    }
    Ok(last)
}

fn no_binding() -> Error {
    Error::InvalidRequest("internal: a static-layout batch without its binding".into())
}

fn no_buffer() -> Error {
    Error::InvalidRequest("internal: a static-layout batch without its buffers".into())
}
