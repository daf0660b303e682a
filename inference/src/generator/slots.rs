//! Adapter slots: rows of one batch running different adapters in one forward pass.
//!
//! Every LoRA input of the model takes the resident adapters side by side along the rank
//! axis, `slot_rank` columns each (A `[in, slots·slot_rank]`, B `[slots·slot_rank, out]`,
//! zero-padded), and the graph's `lora_mask` input (`[rows, 1, slots·slot_rank]`) gives
//! each row its slot's columns: `x·A` is masked per row before `·B`. A base-model row has
//! an all-zero mask. Unused columns multiply by exact zeros, so a row gets what it would
//! get alone. An adapter set (one adapter, or a weighted merge: one more adapter of the
//! summed rank) is copied into a free slot when a row needs it; slots are reused least
//! recently used first, never while a running row uses them.
//!
//! The cost: while any row of a batch uses a slot, every LoRA module computes
//! `slots·slot_rank` columns for every row; per-adapter-set batches (slots off) compute only
//! each set's own rank.

use std::sync::Arc;

use crate::adapter::{LoraFeed, LoraWeights};
use crate::config::{FloatDtype, LoraInputs, LoraModule};
use crate::error::{Error, Result};
use crate::floats::{float_tensor, read_floats};
use crate::registry::AdapterSet;

/// A resident adapter set.
struct Slot {
    key: String,
    last_used: u64,
}

/// The slots of one session (each session feeds its own).
pub(super) struct SlotBank {
    modules: Arc<[LoraModule]>,
    /// The element type the LoRA inputs take.
    dtype: FloatDtype,
    slots: Vec<Option<Slot>>,
    /// Columns per slot.
    rank: usize,
    /// Every module's stacked A and B, as fed.
    feed: Arc<LoraFeed>,
    clock: u64,
}

impl SlotBank {
    /// `n` empty slots of `rank` columns over the model's LoRA inputs.
    pub(super) fn new(lora: &LoraInputs, n: usize, rank: usize) -> Result<Self> {
        let (modules, dtype) = (&lora.modules, lora.dtype);
        let width = n * rank;
        let mut inputs = Vec::with_capacity(2 * modules.len());
        for m in modules {
            let zeros = |n: usize| vec![0f32; n];
            let a = float_tensor(dtype, [m.in_features, width], zeros(m.in_features * width))?;
            let b = float_tensor(
                dtype,
                [width, m.out_features],
                zeros(width * m.out_features),
            )?;
            inputs.push((m.a.clone(), a));
            inputs.push((m.b.clone(), b));
        }
        Ok(SlotBank {
            modules: modules.as_slice().into(),
            dtype,
            slots: (0..n).map(|_| None).collect(),
            rank,
            feed: Arc::new(LoraFeed { inputs, bytes: 0 }),
            clock: 0,
        })
    }

    /// The stacked A and B of every module, to feed with a mask.
    pub(super) fn feed(&self) -> &Arc<LoraFeed> {
        &self.feed
    }

    /// How many slots there are.
    pub(super) fn slots(&self) -> usize {
        self.slots.len()
    }

    /// The slot holding `set`, if resident (marked used now).
    pub(super) fn find(&mut self, set: &AdapterSet) -> Option<usize> {
        let key = set.key();
        self.clock += 1;
        let now = self.clock;
        let (i, slot) = self
            .slots
            .iter_mut()
            .enumerate()
            .find_map(|(i, s)| s.as_mut().filter(|s| s.key == key).map(|s| (i, s)))?;
        slot.last_used = now;
        Some(i)
    }

    /// Copies `weights` (the set's LoRA matrices) into a slot no running row uses (`busy`),
    /// an empty one first, else the least recently used; `None` if every slot is busy.
    pub(super) fn load(
        &mut self,
        set: &AdapterSet,
        weights: &LoraWeights,
        busy: &[bool],
    ) -> Result<Option<usize>> {
        let rank = weights.modules.values().map(|p| p.rank).max().unwrap_or(0);
        if rank > self.rank {
            // The queue sends only sets that fit (`fits_a_slot`); larger ones run apart.
            return Err(Error::InvalidRequest(format!(
                "internal: a set of rank {rank} was sent to slots of {} columns",
                self.rank
            )));
        }
        let free = |i: usize| !busy.get(i).copied().unwrap_or(false);
        let pick = (0..self.slots.len())
            .filter(|&i| free(i))
            .min_by_key(|&i| self.slots[i].as_ref().map_or(0, |s| s.last_used));
        let Some(i) = pick else {
            return Ok(None);
        };
        self.write(i, weights)?;
        self.clock += 1;
        self.slots[i] = Some(Slot {
            key: set.key(),
            last_used: self.clock,
        });
        Ok(Some(i))
    }

    /// Rewrites slot `i`'s columns in every module (zeros where `weights` lacks the module
    /// or has a smaller rank): new tensors, since running batches may still hold the old.
    fn write(&mut self, i: usize, weights: &LoraWeights) -> Result<()> {
        let width = self.slots.len() * self.rank;
        let cols = i * self.rank..(i + 1) * self.rank;
        let mut inputs = Vec::with_capacity(self.feed.inputs.len());
        for (m, pair) in self.modules.iter().zip(self.feed.inputs.chunks(2)) {
            let (_, mut a) = read_floats(&pair[0].1)?;
            let (_, mut b) = read_floats(&pair[1].1)?;
            for row in 0..m.in_features {
                a[row * width + cols.start..row * width + cols.end].fill(0.0);
            }
            b[cols.start * m.out_features..cols.end * m.out_features].fill(0.0);
            if let Some(p) = weights.modules.get(&m.module) {
                for row in 0..m.in_features {
                    let dst = row * width + cols.start;
                    a[dst..dst + p.rank].copy_from_slice(&p.a_t[row * p.rank..(row + 1) * p.rank]);
                }
                let dst = cols.start * m.out_features;
                b[dst..dst + p.b_t.len()].copy_from_slice(&p.b_t);
            }
            inputs.push((
                m.a.clone(),
                float_tensor(self.dtype, [m.in_features, width], a)?,
            ));
            inputs.push((
                m.b.clone(),
                float_tensor(self.dtype, [width, m.out_features], b)?,
            ));
        }
        self.feed = Arc::new(LoraFeed { inputs, bytes: 0 });
        Ok(())
    }

    /// The mask of rows using these slots (`None`: the base model), `[rows, 1, width]`, and
    /// its width.
    pub(super) fn mask(&self, rows: impl Iterator<Item = Option<usize>>) -> (Vec<f32>, usize) {
        let width = self.slots.len() * self.rank;
        let mut mask = Vec::new();
        for slot in rows {
            let start = mask.len();
            mask.resize(start + width, 0.0);
            if let Some(s) = slot.filter(|&s| s < self.slots.len()) {
                mask[start + s * self.rank..start + (s + 1) * self.rank].fill(1.0);
            }
        }
        (mask, width)
    }
}
