//! A running batch: rows sharing an adapter set and a KV cache, stepped together. Rows
//! join at step boundaries (prefilled on their own, then merged into the cache) and leave
//! when they finish (dropped from the cache).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ort::session::{IoBinding, Session};
use ort::value::{DynValue, Tensor};

use super::Shared;
use super::cache::{HostTensor, Pick, first_attended, gather, host_view};
use super::forward::{Inputs, empty_past, new_binding};
use super::graph_step::{GraphStep, SpareBuffers};
use super::kv_buffer::KvBuffer;
use super::prompt_cache::columns;
use super::prompt_chunks::run_chunked;
use super::row::Row;
use super::slots::SlotBank;
use crate::adapter::LoraFeed;
use crate::config::GraphOps;
use crate::error::{Error, Result};
use crate::floats::float_tensor;
use crate::registry::{Activation, AdapterSet};

/// The keys and values of a prompt's first tokens, from the prompt cache: how many tokens,
/// and `[1, heads, tokens, dim]` per present tensor.
pub(super) type CachedPrefix = (usize, Vec<HostTensor<f32>>);

/// Each row's LoRA columns when rows go through adapter slots: `[rows, 1, width]` and the
/// width.
pub(super) type LoraMask = (Vec<f32>, usize);

/// Fewest leading tokens a prompt must share with a kept one for its prefill to start from
/// them: fewer saves less than running the row apart from the others of its batch costs.
pub(super) const MIN_CACHED_PREFIX: usize = 16;

/// The decode state of rows sharing one adapter set.
///
/// Layout: the cache holds `rows.len()` rows of `total` columns each. A prefill pads every
/// prompt on the left to the longest one, so column `total - 1` is every row's latest
/// token and each decode step appends one column to all rows at once. `mask` marks which
/// columns a row attends to (0 for its padding), and `next_pos` keeps each row's own
/// position count, which padding does not advance. Joining pads the narrower of the two
/// caches on the left; leaving drops the row and any leading columns no row attends to.
///
/// The cache stays where the session put it (host memory on the CPU, device memory with
/// CUDA) and is fed straight back as the next step's past; it goes through host memory
/// only when rows join, or leave a host cache (on a device, finished rows ride along
/// until as many have finished as still run, or until rows join).
pub(super) struct Batch {
    pub(super) set: AdapterSet,
    pub(super) activation: Activation,
    /// Rows of any adapter set fed through the session's adapter slots (each row its own
    /// slot, `set` is the base model's); else every row runs `activation`.
    pub(super) mixed: bool,
    pub(super) binding: Option<IoBinding>,
    /// The slot tensors `binding` has bound (`None`: `activation`'s).
    pub(super) bound: Option<Arc<LoraFeed>>,
    /// The rows, in cache order (finished ones until they are dropped from the cache).
    pub(super) rows: Vec<Row>,
    past: Vec<DynValue>,
    /// Attention mask of the cached rows, `[rows, total]`, row-major.
    mask: Vec<i64>,
    /// Columns in the KV cache.
    pub(super) total: usize,
    /// Next position id of each cached row.
    next_pos: Vec<i64>,
    /// The static layout's cache (`--ops static`, see `in_place`): rows in fixed buffers,
    /// in the order of `rows`. `past`, `mask` and `next_pos` are unused then.
    pub(super) kv: Option<KvBuffer>,
    /// With fixed decode steps (`graph_step`): the steps made for `kv`, least recently run
    /// first.
    pub(super) steps: Vec<GraphStep>,
}

impl Batch {
    /// Rows not prefilled yet.
    pub(super) fn new(set: AdapterSet, activation: Activation, rows: Vec<Row>) -> Self {
        Batch {
            set,
            activation,
            mixed: false,
            binding: None,
            bound: None,
            rows,
            past: Vec::new(),
            mask: Vec::new(),
            total: 0,
            next_pos: Vec::new(),
            kv: None,
            steps: Vec::new(),
        }
    }

    /// Rows fed through the session's adapter slots.
    pub(super) fn mixed(mut self) -> Self {
        self.mixed = true;
        self
    }

    /// Rows still decoding.
    pub(super) fn live(&self) -> usize {
        self.rows.iter().filter(|r| r.live()).count()
    }

    /// Most tokens a row may still generate.
    pub(super) fn steps_left(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| r.live())
            .map(Row::steps_left)
            .max()
            .unwrap_or(0)
    }

    /// Answers every row with `e` and empties the batch (a failed forward pass).
    pub(super) fn fail(&mut self, e: &Error) {
        for r in &mut self.rows {
            r.settle(Some(e));
        }
        self.rows.clear();
        self.past.clear();
        self.kv = None;
        self.steps.clear();
        self.binding = None;
    }

    /// Splits off each row whose prompt starts with at least [`MIN_CACHED_PREFIX`] tokens
    /// of a prompt in the prompt cache (kept under the adapters it runs with) into a batch of
    /// its own, paired with those tokens' keys and values; the other rows stay together.
    pub(super) fn split_cached(mut self, shared: &Shared) -> Vec<(Batch, Option<CachedPrefix>)> {
        if !shared.prompt_cache.enabled() {
            return vec![(self, None)];
        }
        let mut parts = Vec::new();
        let mut rest = Vec::with_capacity(self.rows.len());
        for row in std::mem::take(&mut self.rows) {
            let (set, activation) = self.weights_of(&row);
            let cached = shared.prompt_cache.longest_prefix(
                set,
                activation,
                &row.context,
                MIN_CACHED_PREFIX,
            );
            match cached {
                Some(c) => {
                    let mut alone =
                        Batch::new(self.set.clone(), self.activation.clone(), vec![row]);
                    alone.mixed = self.mixed;
                    parts.push((alone, Some(c)));
                }
                None => rest.push(row),
            }
        }
        if !rest.is_empty() {
            self.rows = rest;
            parts.push((self, None));
        }
        parts
    }

    /// Runs every prompt at once, left-padded to the longest, and samples each row's first
    /// token. With `cached` (a batch of one row): the keys and values of the prompt's first
    /// tokens, which are fed as the past, and only the rest of the prompt is run.
    pub(super) fn prefill(
        &mut self,
        shared: &Shared,
        session: &mut Session,
        bank: Option<&SlotBank>,
        spares: &mut SpareBuffers,
        cached: Option<CachedPrefix>,
    ) -> Result<()> {
        let t0 = Instant::now();
        let b = self.rows.len();
        let reused = cached.as_ref().map_or(0, |(n, _)| *n);
        for r in &mut self.rows {
            let prompt_tokens = r.context.len();
            r.stage = Some(tracing::info_span!(
                parent: &r.span,
                "prefill",
                prompt_tokens,
                cached_tokens = reused,
                batch = b,
                tokens = tracing::field::Empty
            ));
        }
        if shared.config.ops == GraphOps::Static {
            self.prefill_in_place(shared, session, bank, spares, cached)?;
        } else {
            self.prefill_padded(shared, session, bank, cached)?;
        }
        let took = t0.elapsed();
        for r in &mut self.rows {
            r.timings.prefill = took;
            // The prefill span closes before a row still running starts decoding.
            r.stage = None;
            if r.live() {
                r.stage = Some(tracing::info_span!(
                    parent: &r.span,
                    "decode",
                    tokens = tracing::field::Empty
                ));
            }
        }
        Ok(())
    }

    /// The prefill of the padded layouts (`--ops portable` and `fused`).
    fn prefill_padded(
        &mut self,
        shared: &Shared,
        session: &mut Session,
        bank: Option<&SlotBank>,
        cached: Option<CachedPrefix>,
    ) -> Result<()> {
        let cfg = &shared.config;
        let b = self.rows.len();
        let (reused, past) = match cached {
            Some((len, layers)) if b == 1 => {
                let past = layers
                    .into_iter()
                    .map(|t| float_tensor(cfg.kv_dtype, t.shape, t.data))
                    .collect::<Result<Vec<DynValue>>>()?;
                (len, past)
            }
            Some(_) => {
                return Err(Error::InvalidRequest(
                    "internal: a cached prefix is for a batch of one row".into(),
                ));
            }
            None => (0, empty_past(cfg, b)?),
        };
        let seq = self
            .rows
            .iter()
            .map(|r| r.context.len() - reused)
            .max()
            .unwrap_or(1);
        let pad = i64::from(
            cfg.pad_token_id
                .or(cfg.eos_token_ids.first().copied())
                .unwrap_or(0),
        );
        // Left padding: a row of `n` tokens gets `seq - n` pad tokens first, masked out
        // (0) and at position 0; its own tokens follow at positions 0..n. Every row then
        // ends in column `seq - 1`, whose logits are its next-token logits. A cached prefix
        // (one row, no padding) is the first `reused` columns, attended.
        let mut ids = Vec::with_capacity(b * seq);
        let mut pos = Vec::with_capacity(b * seq);
        self.mask = Vec::with_capacity(b * (reused + seq));
        for row in &self.rows {
            let ctx = &row.context[reused..];
            let padn = seq - ctx.len();
            ids.extend(std::iter::repeat_n(pad, padn));
            ids.extend(ctx.iter().map(|&t| i64::from(t)));
            pos.extend(std::iter::repeat_n(0, padn));
            pos.extend(reused as i64..row.context.len() as i64);
            self.mask.extend(std::iter::repeat_n(0, padn));
            self.mask.extend(std::iter::repeat_n(1, reused + ctx.len()));
        }
        self.next_pos = self.rows.iter().map(|r| r.context.len() as i64).collect();
        self.total = reused + seq;
        self.past = past;
        if shared.io_binding {
            self.binding = Some(new_binding(session, &self.activation)?);
            self.bound = None;
        }
        // The prompts to keep, taken before sampling appends each row's first token.
        let keep: Vec<(usize, Vec<u32>)> = if shared.prompt_cache.enabled() {
            self.rows
                .iter()
                .enumerate()
                .filter(|(_, r)| r.keep_prompt_cache)
                .map(|(i, r)| (i, r.context.clone()))
                .collect()
        } else {
            Vec::new()
        };
        self.forward_and_sample(shared, session, bank, ids, pos, seq)?;
        if !keep.is_empty() {
            self.keep_prompts(shared, keep, self.total)?;
        }
        Ok(())
    }

    /// Leaves each `(row, prompt)`'s columns of the present cache (`width` columns; its
    /// padding cut off) in the prompt cache, under the adapters that row ran with.
    fn keep_prompts(
        &self,
        shared: &Shared,
        keep: Vec<(usize, Vec<u32>)>,
        width: usize,
    ) -> Result<()> {
        if keep.is_empty() {
            return Ok(());
        }
        // Each kept row's columns, cut straight from the present tensors where they are in
        // host memory (a device cache is copied off first).
        let mut layers: Vec<Vec<HostTensor<f32>>> = keep.iter().map(|_| Vec::new()).collect();
        for v in &self.past {
            let copied: HostTensor<f32>;
            let (shape, data) = match host_view(v) {
                Ok(view) => view,
                Err(_) => {
                    copied = HostTensor::from_value(v)?;
                    (copied.shape, copied.data.as_slice())
                }
            };
            for ((i, tokens), row) in keep.iter().zip(&mut layers) {
                row.push(columns(shape, data, *i, width - tokens.len()..width));
            }
        }
        for ((i, tokens), layers) in keep.into_iter().zip(layers) {
            let (set, activation) = self.weights_of(&self.rows[i]);
            shared.prompt_cache.insert(set, activation, tokens, layers);
        }
        Ok(())
    }

    /// The adapter set and activation whose keys and values `row`'s cache holds: its slot's
    /// set (the slot bank's copy of it equals the set's own weights), else the batch's.
    pub(super) fn weights_of<'a>(&'a self, row: &'a Row) -> (&'a AdapterSet, &'a Activation) {
        match &row.slot {
            Some(s) => (&s.set, &s.activation),
            None => (&self.set, &self.activation),
        }
    }

    /// One decode step: feeds each row's latest token and samples the next.
    pub(super) fn decode(
        &mut self,
        shared: &Shared,
        session: &mut Session,
        bank: Option<&SlotBank>,
    ) -> Result<()> {
        let t0 = Instant::now();
        if self.kv.is_some() {
            return self.decode_in_place(shared, session, bank, t0);
        }
        let b = self.rows.len();
        // A finished row riding along in a device cache feeds its last token too; what it
        // samples is ignored.
        let ids: Vec<i64> = self
            .rows
            .iter()
            .map(|r| i64::from(*r.context.last().unwrap_or(&0)))
            .collect();
        // Each row continues its own positions (padding took none of them)...
        let pos = self.next_pos.clone();
        for p in &mut self.next_pos {
            *p += 1;
        }
        // ...while the new token takes the same new column, attended, in every row.
        let t = self.total;
        let mut mask = Vec::with_capacity(b * (t + 1));
        for i in 0..b {
            mask.extend_from_slice(&self.mask[i * t..(i + 1) * t]);
            mask.push(1);
        }
        self.mask = mask;
        self.total = t + 1;
        let live: Vec<bool> = self.rows.iter().map(Row::live).collect();
        self.forward_and_sample(shared, session, bank, ids, pos, 1)?;
        let took: Duration = t0.elapsed();
        for (r, was_live) in self.rows.iter_mut().zip(live) {
            if was_live {
                r.timings.decode += took;
            }
        }
        Ok(())
    }

    /// Runs `seq` new tokens per cached row against the past, keeps the present as the next
    /// past, and samples one token for every running row from its last position's logits.
    fn forward_and_sample(
        &mut self,
        shared: &Shared,
        session: &mut Session,
        bank: Option<&SlotBank>,
        ids: Vec<i64>,
        pos: Vec<i64>,
        seq: usize,
    ) -> Result<()> {
        let (activation, lora_mask) = self.pass_activation(session, bank, false)?;
        let past = std::mem::take(&mut self.past);
        let (last_logits, present) = run_chunked(
            shared,
            session,
            self.binding.as_mut(),
            &activation,
            Inputs {
                ids,
                pos,
                mask: &self.mask,
                batch: self.rows.len(),
                seq,
                total: self.total,
                past,
                lora_mask,
            },
        )?;
        self.past = present;
        self.sample(shared, &last_logits)
    }

    /// The activation of the next pass over the rows, and each row's LoRA columns when
    /// they go through adapter slots (`[rows, 1, width]` and the width). Rebinds the binding
    /// (made first if `bind` and there is none) when the slot tensors changed.
    pub(super) fn pass_activation(
        &mut self,
        session: &Session,
        bank: Option<&SlotBank>,
        bind: bool,
    ) -> Result<(Activation, Option<LoraMask>)> {
        // Slots only while some row uses one: base-model rows alone skip the LoRA columns.
        let slotted = self.mixed && self.rows.iter().any(|r| r.slot.is_some());
        let (activation, lora_mask, feed) = match bank.filter(|_| slotted) {
            Some(bank) => (
                Activation::Feed(bank.feed().clone()),
                Some(bank.mask(self.rows.iter().map(|r| r.slot.as_ref().map(|s| s.index)))),
                Some(bank.feed().clone()),
            ),
            None => (self.activation.clone(), None, None),
        };
        let same = match (&self.bound, &feed) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        if (!same && self.binding.is_some()) || (bind && self.binding.is_none()) {
            self.binding = Some(new_binding(session, &activation)?);
            self.bound = feed;
        }
        Ok((activation, lora_mask))
    }

    /// Appends one token to every running row from its row of `last_logits`
    /// (`[rows, vocab]`), applies end-of-sequence, stop strings and length limits, sends
    /// streams their piece and answers the rows that finished.
    pub(super) fn sample(&mut self, shared: &Shared, last_logits: &[f32]) -> Result<()> {
        let v = shared.config.vocab_size;
        self.append_each(shared, |i, row| {
            let mut logits = last_logits[i * v..(i + 1) * v].to_vec();
            row.sampler
                .sample(&mut logits, &row.context)
                .ok_or(Error::NonFiniteLogits {
                    step: row.generated.len(),
                    row: i,
                })
        })
    }

    /// Whether every running row takes the plain argmax of its logits, so the graph's own
    /// argmax (`next_token`) can pick for all of them: only token ids leave the device.
    pub(super) fn argmax_picks(&self, shared: &Shared) -> bool {
        shared.config.outputs.next_token.is_some()
            && self
                .rows
                .iter()
                .filter(|r| r.live())
                .all(|r| r.sampler.picks_argmax())
    }

    /// Like [`Batch::sample`], with each running row's token picked by the graph
    /// (`tokens`, one per row; -1 where the row's logits were not finite).
    pub(super) fn take_picks(&mut self, shared: &Shared, tokens: &[i64]) -> Result<()> {
        let v = shared.config.vocab_size;
        self.append_each(shared, |i, row| {
            let tok = match tokens.get(i).map(|&t| u32::try_from(t)) {
                Some(Ok(t)) if (t as usize) < v => t,
                Some(_) => {
                    return Err(Error::NonFiniteLogits {
                        step: row.generated.len(),
                        row: i,
                    });
                }
                None => {
                    return Err(Error::InvalidRequest(
                        "internal: fewer picked tokens than rows".into(),
                    ));
                }
            };
            row.sampler.accept(tok);
            Ok(tok)
        })
    }

    /// Appends to every running row the token `pick` gives it (by row index); nothing is
    /// appended if any pick fails.
    fn append_each(
        &mut self,
        shared: &Shared,
        mut pick: impl FnMut(usize, &mut Row) -> Result<u32>,
    ) -> Result<()> {
        let mut picked = Vec::with_capacity(self.rows.len());
        for (i, row) in self.rows.iter_mut().enumerate() {
            picked.push(if row.live() { pick(i, row)? } else { 0 });
        }
        self.append(shared, &picked)
    }

    /// Appends `picked[i]` to every running row `i`; see [`Batch::sample`].
    fn append(&mut self, shared: &Shared, picked: &[u32]) -> Result<()> {
        let cfg = &shared.config;
        let live = self.live();
        for (row, &tok) in self.rows.iter_mut().zip(picked) {
            if !row.live() {
                continue;
            }
            row.timings.batch_size = row.timings.batch_size.max(live);
            row.context.push(tok);
            row.generated.push(tok);
            let is_eos = cfg.eos_token_ids.contains(&tok);
            if is_eos && !row.ignore_eos {
                row.finish = Some(super::FinishReason::Eos);
            } else if let Some(piece) = row.decoder.step(&shared.tokenizer, tok)? {
                row.push_text(&piece);
            }
            if row.live() && row.generated.len() >= row.max_tokens {
                row.finish = Some(super::FinishReason::Length);
            }
            if !row.live()
                && !matches!(row.finish, Some(super::FinishReason::Stop(_)))
                && let Some(rest) = row.decoder.finish(&shared.tokenizer)?
            {
                row.push_text(&rest);
            }
            row.send_piece(tok);
            if !row.live() {
                row.settle(None);
            }
        }
        Ok(())
    }

    /// At a step boundary: ends the rows whose callers cancelled them and drops finished
    /// rows from the cache (on a device only once as many have finished as still run).
    pub(super) fn retire(&mut self) -> Result<()> {
        for r in &mut self.rows {
            r.check_cancel();
        }
        if self.kv.is_some() {
            return self.retire_in_place();
        }
        let live = self.live();
        let dead = self.rows.len() - live;
        if dead == 0 {
            return Ok(());
        }
        if live == 0 {
            self.rows.clear();
            self.past.clear();
            self.binding = None;
            return Ok(());
        }
        if self.past.first().is_some_and(on_host) || dead >= live {
            self.reshape(Vec::new())?;
        }
        Ok(())
    }

    /// Merges `newcomers` (prefilled, same adapter set) into this batch at a step boundary,
    /// in one rebuild of the cache.
    pub(super) fn absorb(&mut self, shared: &Shared, newcomers: Vec<Batch>) -> Result<()> {
        if self.kv.is_some() {
            return self.absorb_in_place(shared, newcomers);
        }
        self.reshape(newcomers)
    }

    /// Rebuilds the cache from this batch's running rows and `incoming`'s: each side drops
    /// its finished rows and the leading columns none of its rows attends to, and the
    /// narrower sides are left-padded (masked out) to the widest. On failure every row of
    /// every side is answered with the error.
    fn reshape(&mut self, incoming: Vec<Batch>) -> Result<()> {
        let mut empty = Batch::new(self.set.clone(), self.activation.clone(), Vec::new());
        empty.mixed = self.mixed;
        let mut sides: Vec<Batch> = vec![std::mem::replace(self, empty)];
        sides.extend(incoming);
        match Self::merged(&mut sides) {
            Ok(merged) => {
                *self = merged;
                Ok(())
            }
            Err(e) => {
                for side in &mut sides {
                    side.fail(&e);
                }
                Err(e)
            }
        }
    }

    /// The running rows of `sides` in one cache (the first side's binding kept).
    fn merged(sides: &mut [Batch]) -> Result<Batch> {
        let mut picks = Vec::new();
        let mut width = 0;
        for (s, side) in sides.iter().enumerate() {
            let firsts = first_attended(&side.mask, side.rows.len(), side.total);
            let keep: Vec<usize> = (0..side.rows.len())
                .filter(|&i| side.rows[i].live())
                .collect();
            let from = keep.iter().map(|&i| firsts[i]).min().unwrap_or(side.total);
            width = width.max(side.total - from);
            picks.extend(keep.iter().map(|&row| Pick { src: s, row, from }));
        }
        let mut past = Vec::with_capacity(sides[0].past.len());
        for layer in 0..sides[0].past.len() {
            // A host cache is read in place (one copy, into the new cache); a device cache
            // is copied off first.
            let copies = sides
                .iter()
                .map(|s| match host_view(&s.past[layer]) {
                    Ok(_) => Ok(None),
                    Err(_) => HostTensor::from_value(&s.past[layer]).map(Some),
                })
                .collect::<Result<Vec<_>>>()?;
            let views = sides
                .iter()
                .zip(&copies)
                .map(|(s, copy)| match copy {
                    Some(c) => Ok(c.view()),
                    None => host_view(&s.past[layer]).map_err(Error::from),
                })
                .collect::<Result<Vec<_>>>()?;
            let data = gather(&views, &picks, width);
            let [_, heads, _, dim] = views[0].0;
            past.push(Tensor::from_array(([picks.len(), heads, width, dim], data))?.into_dyn());
        }
        let masks: Vec<HostTensor<i64>> = sides
            .iter()
            .map(|s| HostTensor::mask(s.mask.clone(), s.rows.len(), s.total))
            .collect();
        let views: Vec<_> = masks.iter().map(HostTensor::view).collect();
        let mask = gather(&views, &picks, width);
        let next_pos = picks.iter().map(|p| sides[p.src].next_pos[p.row]).collect();
        let mut rows: Vec<Vec<Option<Row>>> = sides
            .iter_mut()
            .map(|s| std::mem::take(&mut s.rows).into_iter().map(Some).collect())
            .collect();
        let first = &mut sides[0];
        Ok(Batch {
            set: first.set.clone(),
            activation: first.activation.clone(),
            mixed: first.mixed,
            binding: first.binding.take(),
            bound: first.bound.take(),
            rows: picks
                .iter()
                .filter_map(|p| rows[p.src][p.row].take())
                .collect(),
            past,
            mask,
            total: width,
            next_pos,
            kv: None,
            steps: Vec::new(),
        })
    }
}

/// Whether a cache tensor is in host memory (readable in place).
fn on_host(v: &DynValue) -> bool {
    v.try_extract_tensor::<f32>().is_ok()
}
