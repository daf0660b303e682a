//! The prompt's KV cache kept from a generation for scoring its answer.
//!
//! Attribution scores the answer the model just wrote against the very prompt it was
//! written from ([`Generator::score_masked`](super::Generator::score_masked)), which starts
//! by running that prompt again: a second prefill, as long as the first, for nothing new.
//! A request marked with [`GenerateRequest::keep_prompt_cache`](super::GenerateRequest)
//! leaves its prompt's keys and values here after its prefill, and scoring takes the
//! columns of its own prefix from them instead of recomputing them.
//!
//! Entries are bounded by a byte budget (least recently used dropped first) and keyed by
//! the tokens and the adapters that produced them. An adapter set's entry also holds the
//! activation it ran with, and only the very same activation matches it: an adapter
//! reloaded, re-registered or re-merged since is different weights as far as this cache
//! knows, so it misses rather than serving keys computed with other weights.

use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

use super::cache::HostTensor;
use crate::registry::{Activation, AdapterSet};

/// The prompts' KV caches, within a byte budget.
pub(super) struct PromptCache {
    budget: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    entries: Vec<Entry>,
    bytes: usize,
    clock: u64,
    hits: u64,
    misses: u64,
    prefill_hits: u64,
    prefill_tokens: u64,
}

struct Entry {
    set: AdapterSet,
    /// The activation the keys were computed with (`None` for the base model, whose
    /// weights never change).
    witness: Option<Activation>,
    tokens: Vec<u32>,
    /// Every present tensor of the graph, `[heads, tokens, dim]` (the row axis dropped).
    layers: Arc<Vec<HostTensor<f32>>>,
    bytes: usize,
    last_used: u64,
    /// A scoring has read it: what it was kept for first is done (it may still start other
    /// prompts' prefills), so it goes before entries still waiting for theirs.
    scored: bool,
}

/// Counters of the prompt cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PromptCacheStats {
    /// Prompts held.
    pub entries: usize,
    /// Bytes of keys and values held.
    pub bytes: usize,
    /// The byte budget.
    pub budget_bytes: usize,
    /// Scorings that found their prefix here.
    pub hits: u64,
    /// Scorings that ran their prefix again.
    pub misses: u64,
    /// Prefills that started from a kept prompt's leading tokens.
    pub prefill_hits: u64,
    /// Prompt tokens those prefills took from the cache instead of running them.
    pub prefill_tokens: u64,
}

/// Whether two activations are the same weights: the same shared tensors or options.
fn same_activation(a: &Activation, b: &Activation) -> bool {
    match (a, b) {
        (Activation::Feed(x), Activation::Feed(y)) => Arc::ptr_eq(x, y),
        (Activation::RunOptions(x), Activation::RunOptions(y)) => Arc::ptr_eq(x, y),
        _ => false,
    }
}

/// Whether `e` was computed with the weights `set` runs with `activation` now (the base
/// model's never change; an adapter set's only match the very activation they ran with).
fn same_weights(e: &Entry, set: &AdapterSet, activation: &Activation) -> bool {
    match &e.witness {
        None => set.is_base(),
        Some(w) => same_activation(w, activation),
    }
}

impl PromptCache {
    /// An empty cache holding at most `budget` bytes (`0`: never holds anything).
    pub(super) fn new(budget: usize) -> Self {
        PromptCache {
            budget,
            state: Mutex::new(State::default()),
        }
    }

    /// Whether anything can be kept at all.
    pub(super) fn enabled(&self) -> bool {
        self.budget > 0
    }

    // The lock is only held for bookkeeping and a copy; a panic inside cannot leave an
    // entry half-written (entries are pushed whole), so a poisoned lock is still usable.
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `layers` (each `[heads, tokens.len(), dim]`) as the keys and values of
    /// `tokens` under `set` run with `activation`. Replaces an entry for the same tokens
    /// and set; an entry larger than the whole budget is not kept.
    pub(super) fn insert(
        &self,
        set: &AdapterSet,
        activation: &Activation,
        tokens: Vec<u32>,
        layers: Vec<HostTensor<f32>>,
    ) {
        let bytes = layers.iter().map(|t| t.data.len() * 4).sum::<usize>() + tokens.len() * 4;
        if bytes > self.budget || tokens.is_empty() {
            return;
        }
        let mut st = self.lock();
        st.clock += 1;
        let now = st.clock;
        if let Some(i) = st
            .entries
            .iter()
            .position(|e| e.set == *set && e.tokens == tokens)
        {
            let old = st.entries.swap_remove(i);
            st.bytes -= old.bytes;
        }
        // Least recently used first, but entries a scoring has read before those whose
        // answer is still being written: under many concurrent chats a long answer's prompt
        // would otherwise be dropped just before its scoring needs it.
        while st.bytes + bytes > self.budget {
            let Some(oldest) = (0..st.entries.len())
                .min_by_key(|&i| (!st.entries[i].scored, st.entries[i].last_used))
            else {
                break;
            };
            let gone = st.entries.swap_remove(oldest);
            st.bytes -= gone.bytes;
        }
        st.bytes += bytes;
        st.entries.push(Entry {
            set: set.clone(),
            witness: (!set.is_base()).then(|| activation.clone()),
            tokens,
            layers: Arc::new(layers),
            bytes,
            last_used: now,
            scored: false,
        });
    }

    /// The keys and values of `prefix` under `set` run with `activation`, cut from any
    /// kept prompt that starts with it, as `[1, heads, prefix.len(), dim]` tensors in the
    /// graph's present order; `None` when no kept prompt does.
    pub(super) fn prefix(
        &self,
        set: &AdapterSet,
        activation: &Activation,
        prefix: &[u32],
    ) -> Option<Vec<HostTensor<f32>>> {
        if !self.enabled() || prefix.is_empty() {
            return None;
        }
        let layers = {
            let mut st = self.lock();
            st.clock += 1;
            let now = st.clock;
            let found = st.entries.iter_mut().find(|e| {
                e.set == *set && e.tokens.starts_with(prefix) && same_weights(e, set, activation)
            });
            let layers = found.map(|e| {
                e.last_used = now;
                e.scored = true;
                e.layers.clone()
            });
            match layers {
                Some(_) => st.hits += 1,
                None => st.misses += 1,
            }
            layers?
        };
        // The copy happens outside the lock: other callers only wait for the lookup.
        Some(
            layers
                .iter()
                .map(|t| columns(t.shape, &t.data, 0, 0..prefix.len()))
                .collect(),
        )
    }

    /// The longest run of leading tokens that `tokens` shares with a prompt kept under
    /// `set` run with `activation`, when it is at least `min` tokens, and its keys and values
    /// (`[1, heads, len, dim]` per present tensor). At most `tokens.len() - 1`: the last
    /// token is always run, for the logits of the next one.
    pub(super) fn longest_prefix(
        &self,
        set: &AdapterSet,
        activation: &Activation,
        tokens: &[u32],
        min: usize,
    ) -> Option<(usize, Vec<HostTensor<f32>>)> {
        let most = tokens.len().checked_sub(1)?;
        if !self.enabled() || most < min.max(1) {
            return None;
        }
        let (len, layers) = {
            let mut st = self.lock();
            let (i, len) = st
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.set == *set && same_weights(e, set, activation))
                .map(|(i, e)| {
                    let shared = e
                        .tokens
                        .iter()
                        .zip(tokens)
                        .take_while(|(a, b)| a == b)
                        .count();
                    (i, shared.min(most))
                })
                .max_by_key(|&(_, len)| len)
                .filter(|&(_, len)| len >= min)?;
            st.clock += 1;
            st.prefill_hits += 1;
            st.prefill_tokens += len as u64;
            let now = st.clock;
            let entry = &mut st.entries[i];
            entry.last_used = now;
            let layers = entry.layers.clone();
            (len, layers)
        };
        Some((
            len,
            layers
                .iter()
                .map(|t| columns(t.shape, &t.data, 0, 0..len))
                .collect(),
        ))
    }

    /// Entries, bytes and hit counts.
    pub(super) fn stats(&self) -> PromptCacheStats {
        let st = self.lock();
        PromptCacheStats {
            entries: st.entries.len(),
            bytes: st.bytes,
            budget_bytes: self.budget,
            hits: st.hits,
            misses: st.misses,
            prefill_hits: st.prefill_hits,
            prefill_tokens: st.prefill_tokens,
        }
    }
}

/// Row `row` of a KV tensor `[rows, heads, cols, dim]` (`shape`, `data`), only the
/// columns `keep`: `[1, heads, keep.len(), dim]`, as float32 (a float16 cache widened).
pub(super) fn columns<T: Copy + Into<f32>>(
    shape: [usize; 4],
    data: &[T],
    row: usize,
    keep: Range<usize>,
) -> HostTensor<f32> {
    let [_, heads, cols, dim] = shape;
    let n = keep.len();
    let mut out = Vec::with_capacity(heads * n * dim);
    for h in 0..heads {
        let block = (row * heads + h) * cols * dim;
        let kept = &data[block + keep.start * dim..block + keep.end * dim];
        out.extend(kept.iter().map(|&x| x.into()));
    }
    HostTensor {
        shape: [1, heads, n, dim],
        data: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::LoraFeed;

    fn layer(heads: usize, cols: usize, dim: usize, base: f32) -> HostTensor<f32> {
        HostTensor {
            shape: [1, heads, cols, dim],
            data: (0..heads * cols * dim).map(|i| base + i as f32).collect(),
        }
    }

    fn base() -> Activation {
        Activation::Feed(Arc::new(LoraFeed::default()))
    }

    #[test]
    fn a_kept_prompt_serves_any_prefix_of_it() {
        let cache = PromptCache::new(1 << 20);
        let set = AdapterSet::base();
        cache.insert(&set, &base(), vec![5, 6, 7, 8], vec![layer(2, 4, 3, 0.0)]);
        let got = cache
            .prefix(&set, &base(), &[5, 6])
            .expect("a prefix of a kept prompt");
        // Head 0 columns 0..2 then head 1 columns 0..2 (each column 3 values).
        assert_eq!(got[0].shape, [1, 2, 2, 3]);
        assert_eq!(
            got[0].data,
            vec![0., 1., 2., 3., 4., 5., 12., 13., 14., 15., 16., 17.]
        );
        assert!(
            cache.prefix(&set, &base(), &[5, 7]).is_none(),
            "not a prefix"
        );
        assert!(
            cache.prefix(&set, &base(), &[5, 6, 7, 8, 9]).is_none(),
            "longer than the kept prompt"
        );
        let s = cache.stats();
        assert_eq!((s.entries, s.hits, s.misses), (1, 1, 2));
    }

    #[test]
    fn an_adapter_entry_needs_the_very_same_activation() {
        let cache = PromptCache::new(1 << 20);
        let set = AdapterSet::new([(crate::AdapterId::new("a").unwrap(), 1.0)]).unwrap();
        let feed = Activation::Feed(Arc::new(LoraFeed::default()));
        cache.insert(&set, &feed, vec![1, 2, 3], vec![layer(1, 3, 2, 0.0)]);
        assert!(cache.prefix(&set, &feed, &[1, 2]).is_some());
        // Same id, reloaded weights: a different activation.
        assert!(cache.prefix(&set, &base(), &[1, 2]).is_none());
        // The base model never matches an adapter's entry.
        assert!(cache.prefix(&AdapterSet::base(), &feed, &[1, 2]).is_none());
    }

    #[test]
    fn the_budget_drops_the_least_recently_used() {
        // Each entry: 1×2×2 floats + 2 tokens = 16 + 8 = 24 bytes.
        let cache = PromptCache::new(50);
        let set = AdapterSet::base();
        cache.insert(&set, &base(), vec![1, 1], vec![layer(1, 2, 2, 0.0)]);
        cache.insert(&set, &base(), vec![2, 2], vec![layer(1, 2, 2, 0.0)]);
        // A prefill starting from [1, 1] touches it.
        assert!(cache.longest_prefix(&set, &base(), &[1, 1, 9], 1).is_some());
        cache.insert(&set, &base(), vec![3, 3], vec![layer(1, 2, 2, 0.0)]);
        assert!(
            cache.prefix(&set, &base(), &[2]).is_none(),
            "[2, 2] was dropped"
        );
        assert!(cache.prefix(&set, &base(), &[1]).is_some());
        assert!(cache.prefix(&set, &base(), &[3]).is_some());
        assert_eq!(cache.stats().bytes, 48);
        // Larger than the whole budget: not kept, nothing dropped for it.
        cache.insert(&set, &base(), vec![4; 20], vec![layer(1, 20, 2, 0.0)]);
        assert_eq!(cache.stats().entries, 2);
        assert!(PromptCache::new(0).prefix(&set, &base(), &[1]).is_none());
    }

    #[test]
    fn entries_already_scored_are_dropped_before_those_waiting_for_their_scoring() {
        // Room for two entries of 24 bytes.
        let cache = PromptCache::new(50);
        let set = AdapterSet::base();
        cache.insert(&set, &base(), vec![1, 1], vec![layer(1, 2, 2, 0.0)]);
        cache.insert(&set, &base(), vec![2, 2], vec![layer(1, 2, 2, 0.0)]);
        // [1, 1] is scored, which also makes it the more recently used of the two.
        assert!(cache.prefix(&set, &base(), &[1]).is_some());
        cache.insert(&set, &base(), vec![3, 3], vec![layer(1, 2, 2, 0.0)]);
        assert!(
            cache.prefix(&set, &base(), &[2]).is_some(),
            "[2, 2] still waits for its scoring"
        );
        assert!(
            cache.prefix(&set, &base(), &[1]).is_none(),
            "[1, 1] was scored"
        );
        // A prefill starting from an entry does not count as its scoring.
        let cache = PromptCache::new(50);
        cache.insert(&set, &base(), vec![4, 4, 4], vec![layer(1, 3, 1, 0.0)]);
        cache.insert(&set, &base(), vec![5, 5, 5], vec![layer(1, 3, 1, 0.0)]);
        assert!(cache.longest_prefix(&set, &base(), &[4, 4, 9], 2).is_some());
        cache.insert(&set, &base(), vec![6, 6, 6], vec![layer(1, 3, 1, 0.0)]);
        assert!(
            cache.longest_prefix(&set, &base(), &[5, 5, 9], 2).is_none(),
            "plain least recently used: [5, 5, 5] went"
        );
    }

    #[test]
    fn a_batch_row_is_cut_without_its_padding() {
        // Two rows, one head, 3 columns of dim 1: row 1 = [10, 11, 12].
        let t = HostTensor {
            shape: [2, 1, 3, 1],
            data: vec![0., 1., 2., 10., 11., 12.],
        };
        let r = columns(t.shape, &t.data, 1, 1..3);
        assert_eq!(r.shape, [1, 1, 2, 1]);
        assert_eq!(r.data, vec![11., 12.]);
    }
}
