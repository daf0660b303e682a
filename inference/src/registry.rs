//! A registry of adapters by id: registered cheaply, loaded on first use, kept resident
//! within a memory budget (least recently used evicted first), pre-loaded or unloaded on
//! request, and merged per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::adapter::{
    AdapterId, AdapterLimits, AdapterSource, LoadedAdapter, LoraFeed, LoraWeights,
    load_peft_limited, merge,
};
use crate::config::{FloatDtype, LoraModule};
use crate::error::{AdapterError, Error, Result};

/// Default memory budget for resident adapters: 1 GiB.
pub const DEFAULT_ADAPTER_BUDGET: usize = 1 << 30;

/// A weighted set of adapters for one request; empty = the base model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdapterSet(Vec<(AdapterId, f32)>);

impl AdapterSet {
    /// The base model, no adapter.
    pub fn base() -> Self {
        Self::default()
    }
    /// A set from (id, weight) pairs; weights must be finite, ids distinct.
    pub fn new(items: impl IntoIterator<Item = (AdapterId, f32)>) -> Result<Self, AdapterError> {
        let mut v: Vec<(AdapterId, f32)> = items.into_iter().collect();
        for (id, w) in &v {
            if !w.is_finite() {
                return Err(AdapterError::Request(format!("weight of {id} is {w}")));
            }
        }
        v.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = v.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(AdapterError::Request(format!(
                "adapter {} listed twice",
                w[0].0
            )));
        }
        v.retain(|(_, w)| *w != 0.0);
        Ok(AdapterSet(v))
    }
    /// The (id, weight) pairs, sorted by id, zero weights dropped.
    pub fn items(&self) -> &[(AdapterId, f32)] {
        &self.0
    }
    /// Whether this is the base model.
    pub fn is_base(&self) -> bool {
        self.0.is_empty()
    }
    /// A key equal for equal sets (used to batch requests and cache merges).
    pub fn key(&self) -> String {
        self.0
            .iter()
            .map(|(id, w)| format!("{id}:{:08x}", w.to_bits()))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// How a request's adapters reach the session.
#[derive(Clone)]
pub enum Activation {
    /// LoRA input tensors (possibly empty: the base model).
    Feed(Arc<LoraFeed>),
    /// ONNX Runtime run options with an `.onnx_adapter` active.
    RunOptions(Arc<ort::session::RunOptions>),
}

impl std::fmt::Debug for Activation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Activation::Feed(feed) => f.debug_tuple("Feed").field(feed).finish(),
            Activation::RunOptions(_) => f.write_str("RunOptions(..)"),
        }
    }
}

struct Entry {
    source: AdapterSource,
    resident: Option<Arc<LoadedAdapter>>,
    last_used: u64,
}

struct State {
    entries: HashMap<AdapterId, Entry>,
    clock: u64,
    resident_bytes: usize,
    merged: HashMap<String, Merged>,
}

/// A cached merge of an adapter set.
struct Merged {
    feed: Arc<LoraFeed>,
    last_used: u64,
    set: AdapterSet,
}

impl State {
    /// Drops cached merges that include `id` (it was unloaded or evicted).
    fn forget_merges(&mut self, id: &AdapterId) {
        self.merged
            .retain(|_, m| !m.set.items().iter().any(|(i, _)| i == id));
    }
}

/// Counters describing the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegistryStats {
    /// Registered adapters.
    pub registered: usize,
    /// Adapters loaded in memory.
    pub resident: usize,
    /// Bytes held by resident adapters.
    pub resident_bytes: usize,
    /// The memory budget.
    pub budget_bytes: usize,
    /// Cached merged sets.
    pub merged_sets: usize,
}

/// Adapters by id over one model's LoRA inputs. Thread-safe.
pub struct AdapterRegistry {
    modules: Arc<[LoraModule]>,
    /// The element type the model's LoRA inputs take.
    dtype: FloatDtype,
    model_name: Option<String>,
    budget: usize,
    limits: AdapterLimits,
    state: Mutex<State>,
    load_lock: Mutex<()>,
}

impl std::fmt::Debug for AdapterRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdapterRegistry")
            .field("stats", &self.stats())
            .finish()
    }
}

/// How many merged sets are cached.
const MERGED_CACHE: usize = 16;

impl AdapterRegistry {
    /// A registry for a model with these LoRA inputs and a memory budget in bytes.
    pub fn new(modules: Vec<LoraModule>, model_name: Option<String>, budget_bytes: usize) -> Self {
        AdapterRegistry {
            modules: modules.into(),
            dtype: FloatDtype::Float32,
            model_name,
            budget: budget_bytes,
            limits: AdapterLimits::default(),
            state: Mutex::new(State {
                entries: HashMap::new(),
                clock: 0,
                resident_bytes: 0,
                merged: HashMap::new(),
            }),
            load_lock: Mutex::new(()),
        }
    }

    /// These limits instead of the default [`AdapterLimits`] for every adapter loaded.
    pub fn with_limits(mut self, limits: AdapterLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Adapters fed as `dtype` (the model's `lora.dtype`) instead of float32.
    pub fn with_dtype(mut self, dtype: FloatDtype) -> Self {
        self.dtype = dtype;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Poison-tolerant: no user code or I/O runs under the lock, only map updates and
        // byte counts, so a panic there cannot leave an adapter half-loaded; at worst a
        // count is off, which only moves an eviction.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers an adapter under `id` (replacing an earlier one); nothing is loaded yet.
    pub fn register(&self, id: AdapterId, source: AdapterSource) -> Result<()> {
        if self.modules.is_empty() && matches!(source, AdapterSource::Peft(_)) {
            return Err(AdapterError::Mismatch {
                id: id.to_string(),
                model: self.model_name.clone().unwrap_or_default(),
                reason: "the model has no LoRA inputs; export it with --lora-targets".into(),
            }
            .into());
        }
        let mut st = self.lock();
        if let Some(old) = st.entries.remove(&id)
            && let Some(r) = old.resident
        {
            st.resident_bytes -= r.bytes();
        }
        st.merged.clear();
        st.entries.insert(
            id,
            Entry {
                source,
                resident: None,
                last_used: 0,
            },
        );
        Ok(())
    }

    /// Removes an adapter.
    pub fn unregister(&self, id: &AdapterId) -> bool {
        let mut st = self.lock();
        let Some(e) = st.entries.remove(id) else {
            return false;
        };
        if let Some(r) = e.resident {
            st.resident_bytes -= r.bytes();
        }
        st.merged.clear();
        true
    }

    /// Drops an adapter from memory (it stays registered and reloads on next use).
    pub fn unload(&self, id: &AdapterId) -> bool {
        let mut st = self.lock();
        let freed = st
            .entries
            .get_mut(id)
            .and_then(|e| e.resident.take())
            .map(|r| r.bytes());
        if let Some(b) = freed {
            st.resident_bytes -= b;
            st.forget_merges(id);
        }
        freed.is_some()
    }

    /// Ids of the registered adapters.
    pub fn ids(&self) -> Vec<AdapterId> {
        let mut v: Vec<_> = self.lock().entries.keys().cloned().collect();
        v.sort();
        v
    }

    /// Whether `id` is loaded in memory.
    pub fn is_resident(&self, id: &AdapterId) -> bool {
        self.lock()
            .entries
            .get(id)
            .is_some_and(|e| e.resident.is_some())
    }

    /// Counters.
    pub fn stats(&self) -> RegistryStats {
        let st = self.lock();
        RegistryStats {
            registered: st.entries.len(),
            resident: st.entries.values().filter(|e| e.resident.is_some()).count(),
            resident_bytes: st.resident_bytes,
            budget_bytes: self.budget,
            merged_sets: st.merged.len(),
        }
    }

    /// Loads an adapter now (if not resident) and returns it.
    pub fn get(&self, id: &AdapterId) -> Result<Arc<LoadedAdapter>> {
        {
            let mut st = self.lock();
            st.clock += 1;
            let now = st.clock;
            let e = st
                .entries
                .get_mut(id)
                .ok_or_else(|| AdapterError::Unknown(id.to_string()))?;
            e.last_used = now;
            if let Some(r) = &e.resident {
                return Ok(r.clone());
            }
        }
        // One loader at a time, so two callers don't load the same adapter twice.
        let _loading = self
            .load_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let source = {
            let st = self.lock();
            let e = st
                .entries
                .get(id)
                .ok_or_else(|| AdapterError::Unknown(id.to_string()))?;
            if let Some(r) = &e.resident {
                return Ok(r.clone());
            }
            e.source.clone()
        };
        let t0 = Instant::now();
        let loaded = Arc::new(self.load(id, &source)?);
        let bytes = loaded.bytes();
        if bytes > self.budget {
            return Err(AdapterError::OverBudget {
                id: id.to_string(),
                bytes,
                budget: self.budget,
            }
            .into());
        }
        let mut st = self.lock();
        st.clock += 1;
        let now = st.clock;
        let Some(e) = st.entries.get_mut(id) else {
            return Err(AdapterError::Unknown(id.to_string()).into());
        };
        e.resident = Some(loaded.clone());
        e.last_used = now;
        st.resident_bytes += bytes;
        Self::evict(&mut st, self.budget, id);
        tracing::debug!(adapter = %id, bytes, ms = t0.elapsed().as_secs_f64() * 1e3, "adapter loaded");
        Ok(loaded)
    }

    /// Evicts least recently used adapters (never `keep`, never one in use) until within budget.
    fn evict(st: &mut State, budget: usize, keep: &AdapterId) {
        while st.resident_bytes > budget {
            let victim = st
                .entries
                .iter()
                .filter(|(id, e)| {
                    *id != keep
                        && e.resident
                            .as_ref()
                            .is_some_and(|r| Arc::strong_count(r) == 1)
                })
                .min_by_key(|(_, e)| e.last_used)
                .map(|(id, _)| id.clone());
            let Some(v) = victim else { break };
            if let Some(r) = st.entries.get_mut(&v).and_then(|e| e.resident.take()) {
                st.resident_bytes -= r.bytes();
                tracing::debug!(adapter = %v, "adapter evicted");
            }
            st.forget_merges(&v);
        }
    }

    /// Loads these adapters now, so that their first request does not pay for it.
    pub fn preload(&self, ids: &[AdapterId]) -> Result<()> {
        for id in ids {
            self.get(id)?;
        }
        Ok(())
    }

    fn load(&self, id: &AdapterId, source: &AdapterSource) -> Result<LoadedAdapter> {
        match source {
            AdapterSource::Peft(dir) => {
                let weights = load_peft_limited(
                    id,
                    dir,
                    self.model_name.as_deref(),
                    &self.modules,
                    &self.limits,
                )?;
                Ok(LoadedAdapter::Lora(Arc::new(LoraFeed::new(
                    weights,
                    &self.modules,
                    self.dtype,
                )?)))
            }
            AdapterSource::OnnxAdapter(path) => {
                self.limits.bytes(path, &[path])?;
                let bytes = std::fs::metadata(path)
                    .map(|m| m.len() as usize)
                    .map_err(|e| AdapterError::Files {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                tribute_common::environment()?;
                let adapter = ort::session::Adapter::from_file(path, None).map_err(|e| {
                    AdapterError::Files {
                        path: path.clone(),
                        reason: format!("not an ONNX Runtime adapter file: {e}"),
                    }
                })?;
                let mut options = ort::session::RunOptions::new()?;
                options.add_adapter(&adapter)?;
                Ok(LoadedAdapter::Onnx {
                    options: Arc::new(options),
                    bytes,
                })
            }
        }
    }

    /// What a request with this adapter set feeds the session (loading adapters as needed).
    pub fn activate(&self, set: &AdapterSet) -> Result<Activation> {
        match set.items() {
            [] => Ok(Activation::Feed(Arc::new(LoraFeed::default()))),
            [(id, w)] => match &*self.get(id)? {
                LoadedAdapter::Lora(feed) if *w == 1.0 => Ok(Activation::Feed(feed.clone())),
                LoadedAdapter::Onnx { options, .. } if *w == 1.0 => {
                    Ok(Activation::RunOptions(options.clone()))
                }
                _ => self.merged(set),
            },
            _ => self.merged(set),
        }
    }

    fn merged(&self, set: &AdapterSet) -> Result<Activation> {
        let key = set.key();
        {
            let mut st = self.lock();
            st.clock += 1;
            let now = st.clock;
            if let Some(m) = st.merged.get_mut(&key) {
                m.last_used = now;
                return Ok(Activation::Feed(m.feed.clone()));
            }
        }
        let loaded: Vec<(Arc<LoadedAdapter>, f32)> = set
            .items()
            .iter()
            .map(|(id, w)| self.get(id).map(|a| (a, *w)))
            .collect::<Result<_>>()?;
        let mut host: Vec<(LoraWeights, f32)> = Vec::new();
        for ((a, w), (id, _)) in loaded.iter().zip(set.items()) {
            match &**a {
                LoadedAdapter::Lora(feed) => host.push((feed.weights(&self.modules)?, *w)),
                LoadedAdapter::Onnx { .. } => {
                    return Err(Error::Adapter(AdapterError::Request(format!(
                        "{id} is an .onnx_adapter file: it can only be used alone with weight 1 (merge PEFT adapters instead)"
                    ))));
                }
            }
        }
        let parts: Vec<(&LoraWeights, f32)> = host.iter().map(|(l, w)| (l, *w)).collect();
        let merged = merge(&parts, &self.modules);
        let feed = Arc::new(LoraFeed::new(merged, &self.modules, self.dtype)?);
        let mut st = self.lock();
        st.clock += 1;
        let now = st.clock;
        if st.merged.len() >= MERGED_CACHE
            && let Some(old) = st
                .merged
                .iter()
                .min_by_key(|(_, m)| m.last_used)
                .map(|(k, _)| k.clone())
        {
            st.merged.remove(&old);
        }
        st.merged.insert(
            key,
            Merged {
                feed: feed.clone(),
                last_used: now,
                set: set.clone(),
            },
        );
        Ok(Activation::Feed(feed))
    }
}
