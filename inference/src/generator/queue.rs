//! Scheduling: continuous batching. Requests wait in a bounded queue; at every step
//! boundary the caller driving an engine admits queued requests into the engine's running
//! batches (one per adapter set), prefills them and merges their KV cache in, then steps
//! each batch once. Rows leave as soon as they finish.
//!
//! There is no scheduler thread: every caller waiting for an answer (a `generate`, a
//! stream asking for its next piece) drives one round at a time whenever an engine is free,
//! and stops once its own answer has arrived; the others carry on. Callers that find no
//! free engine sleep until an engine comes back having sent someone something (an answer,
//! a stream's piece) or from a scoring pass ([`Wakeup`]), not on a timer: three callers
//! polling every 2 ms woke ~1,500 times a second, preempting the session's threads on a
//! two-core machine (docs/INFERENCE.md gives the measurement and how noisy it is).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use super::batch::Batch;
use super::pool::{Engine, Lease};
use super::row::{Reply, Row, SlotUse, Ticket};
use super::slots::SlotBank;
use super::{CancelToken, GenerateRequest, Generation, Generator, Shared};
use crate::config::GraphOps;
use crate::error::{Error, Result};
use crate::registry::{Activation, AdapterSet};

/// A request waiting for a place in a running batch.
///
/// The queue's lock is poison-tolerant: it is held only to push or take requests, and a
/// request lost to a panic there drops its reply, which its caller reports as an error.
pub(super) struct Queued {
    set: AdapterSet,
    activation: Activation,
    /// Whether the set goes through the adapter slots (slots are on, it is fed as LoRA
    /// tensors and its rank fits a slot); else it runs in a batch of its own set.
    slotted: bool,
    row: Row,
}

/// Longest a waiting caller sleeps without a wake-up before it looks again (a safety net:
/// every engine handed back after sending something, or after scoring, wakes it).
const IDLE_CHECK: Duration = Duration::from_millis(250);

/// Wakes the callers waiting in `Generator::wait` when they may have something to do: an
/// answer or a stream's piece was sent, or an engine came back from a scoring pass. A wake-
/// up is owed when something is sent (during a round, while the engine is checked out) and
/// paid when the engine is handed back, so that whoever wakes can take it and drive on.
#[derive(Default)]
pub(super) struct Wakeup {
    /// Rings so far; a waiter sleeps until it changes.
    rings: Mutex<u64>,
    rung: Condvar,
    owed: AtomicBool,
}

impl Wakeup {
    /// Something was sent to a waiting caller.
    pub(super) fn owe(&self) {
        self.owed.store(true, Ordering::Release);
    }

    /// Whether something was sent since the last wake-up was paid.
    pub(super) fn is_owed(&self) -> bool {
        self.owed.load(Ordering::Acquire)
    }

    /// Wakes every waiter if a wake-up is owed (with the engine back in the pool).
    pub(super) fn pay(&self) {
        if self.owed.swap(false, Ordering::AcqRel) {
            self.ring();
        }
    }

    /// Wakes every waiter.
    pub(super) fn ring(&self) {
        *self.lock() += 1;
        self.rung.notify_all();
    }

    /// Rings so far: a waiter takes this before it looks, and sleeps only if it is still
    /// the count, so that no ring between looking and sleeping is missed.
    fn rings(&self) -> u64 {
        *self.lock()
    }

    /// Sleeps until the count of rings passes `seen` (true), or `timeout` (false).
    fn wait_past(&self, seen: u64, timeout: Duration) -> bool {
        let guard = self.lock();
        let (_guard, waited) = self
            .rung
            .wait_timeout_while(guard, timeout, |rings| *rings == seen)
            .unwrap_or_else(PoisonError::into_inner);
        !waited.timed_out()
    }

    // Held only to read or bump a counter: a poisoned lock is used as it is.
    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        self.rings.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Generator {
    /// Generates one answer.
    ///
    /// Concurrent callers are batched continuously: a request joins the running batch of
    /// its adapter set at the next step boundary and leaves it when it finishes.
    pub fn generate(&self, request: &GenerateRequest) -> Result<Generation> {
        let (tx, rx) = mpsc::channel();
        self.enqueue(request, Reply::Once(tx), None)?;
        self.wait(&rx)?
    }

    /// Generates answers for several requests, returned in request order. Requests with
    /// the same adapter set are decoded together (one forward pass per step, up to
    /// `max_batch` rows in flight); each keeps its own sampling settings, stop strings and
    /// limits. A batch larger than the queue's free room is fed in as room frees up.
    pub fn generate_batch(&self, requests: &[GenerateRequest]) -> Vec<Result<Generation>> {
        let mut out: Vec<Option<Result<Generation>>> = vec![None; requests.len()];
        // Answers not received yet, oldest first.
        let mut pending: VecDeque<(usize, Receiver<Result<Generation>>)> = VecDeque::new();
        for (i, r) in requests.iter().enumerate() {
            loop {
                let (tx, rx) = mpsc::channel();
                match self.enqueue(r, Reply::Once(tx), None) {
                    Ok(_) => pending.push_back((i, rx)),
                    // The queue is full: wait for one of ours, then try again.
                    Err(Error::Overloaded { .. }) if !pending.is_empty() => {
                        if let Some((j, rx)) = pending.pop_front() {
                            out[j] = Some(self.wait(&rx).and_then(|r| r));
                        }
                        continue;
                    }
                    Err(e) => out[i] = Some(Err(e)),
                }
                break;
            }
        }
        for (j, rx) in pending {
            out[j] = Some(self.wait(&rx).and_then(|r| r));
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::InvalidRequest("no answer".into()))))
            .collect()
    }

    /// Checks a request and queues it (`cancel`: one more token that stops it); returns its
    /// prompt length. Fails with [`Error::Overloaded`] when the queue is full.
    pub(super) fn enqueue(
        &self,
        request: &GenerateRequest,
        reply: Reply,
        cancel: Option<CancelToken>,
    ) -> Result<usize> {
        let shared = &self.shared;
        let set = request.adapter_set()?;
        let mut row = self.row(request, set.items().to_vec())?;
        let activation = shared.registry.activate(&set)?;
        let slotted = shared.lora_mask.is_some() && fits_a_slot(shared, &activation)?;
        let mut q = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if q.len() >= shared.max_queue {
            let queued = q.len();
            let pending = shared.pending.load(Ordering::Relaxed);
            return Err(Error::Overloaded {
                in_flight: pending.saturating_sub(queued),
                queued,
            });
        }
        row.reply = Some((reply, Ticket::new(&shared.pending, &shared.wakeup)));
        row.cancel.extend(cancel);
        let prompt_tokens = row.context.len();
        q.push_back(Queued {
            set,
            activation,
            slotted,
            row,
        });
        Ok(prompt_tokens)
    }

    /// Waits for the next message on `rx`, driving rounds whenever an engine is free.
    pub(super) fn wait<T>(&self, rx: &Receiver<T>) -> Result<T> {
        let wakeup = &self.shared.wakeup;
        loop {
            let seen = wakeup.rings();
            match rx.try_recv() {
                Ok(v) => return Ok(v),
                Err(TryRecvError::Disconnected) => return Err(dropped()),
                Err(TryRecvError::Empty) => {}
            }
            if self.drive_round() {
                continue;
            }
            // Another caller is driving (its engine comes back with a ring once it has sent
            // anything), a scoring pass holds the engine, or there is nothing to run.
            let _rung = wakeup.wait_past(seen, IDLE_CHECK);
        }
    }

    /// Runs one round on a free engine; false if none was free or none had anything to do.
    /// Each free engine is tried once (an engine handed back goes to the back of the line),
    /// so a caller whose row runs on another engine than the first one free finds it.
    fn drive_round(&self) -> bool {
        for _ in 0..self.shared.pool.size() {
            let Some(mut lease) = Lease::try_new(&self.shared) else {
                return false;
            };
            let shared = self.shared.clone();
            if lease.run(move |engine| rounds(&shared, engine)) {
                return true;
            }
        }
        false
    }

    /// Drops cancelled rows from a free engine's batches without stepping them (a stream
    /// was dropped): their KV cache is freed now rather than at the next round.
    pub(super) fn reap(&self) {
        if let Some(mut lease) = Lease::try_new(&self.shared) {
            let shared = self.shared.clone();
            lease.run(move |engine| {
                for b in &mut engine.batches {
                    if let Err(e) = b.retire() {
                        b.fail(&e);
                    }
                }
                engine.drop_finished(&shared);
            });
        }
    }
}

fn dropped() -> Error {
    Error::InvalidRequest("the generation was dropped by a failed batch".into())
}

/// Most rounds an engine with a thread of its own runs per trip there (see [`rounds`]).
const ROUNDS_PER_TRIP: usize = 64;

/// One round on `engine`; on an engine with a thread of its own (`engine_thread`), rounds
/// until one sent someone something (an answer, a stream's piece), a scoring pass waits for
/// the engine, or [`ROUNDS_PER_TRIP`]: each trip to that thread and back costs two thread
/// switches, which a decode step of a millisecond on a GPU would feel. False if there was
/// nothing to do.
fn rounds(shared: &Arc<Shared>, engine: &mut Engine) -> bool {
    if !round(shared, engine) {
        return false;
    }
    if engine.thread.is_some() {
        for _ in 1..ROUNDS_PER_TRIP {
            if shared.wakeup.is_owed() || shared.pool.checkouts_waiting() || !round(shared, engine)
            {
                break;
            }
        }
    }
    true
}

/// One step boundary on `engine`: retire finished and cancelled rows, admit and prefill
/// queued requests, then one decode step for each batch in turn. False if there was
/// nothing to do.
fn round(shared: &Arc<Shared>, engine: &mut Engine) -> bool {
    for b in &mut engine.batches {
        if let Err(e) = b.retire() {
            b.fail(&e);
        }
    }
    engine.drop_finished(shared);
    let newcomers = admit(shared, engine);
    if newcomers.is_empty() && engine.batches.is_empty() {
        return false;
    }
    // Newcomers, prefilled, by adapter set (a row that starts from a cached prefix is
    // prefilled on its own), each set's merged into its running batch in one go.
    let mut prefilled: Vec<Vec<Batch>> = Vec::new();
    for (mut fresh, cached) in newcomers.into_iter().flat_map(|b| b.split_cached(shared)) {
        if let Err(e) = fresh.prefill(
            shared,
            &mut engine.session,
            engine.bank.as_ref(),
            &mut engine.spares,
            cached,
        ) {
            fresh.fail(&e);
            continue;
        }
        match prefilled.iter_mut().find(|g| g[0].set == fresh.set) {
            Some(g) => g.push(fresh),
            None => prefilled.push(vec![fresh]),
        }
    }
    for mut group in prefilled {
        match engine.batches.iter_mut().find(|b| b.set == group[0].set) {
            // `absorb` answers every side's rows if it fails.
            Some(running) => {
                let _ = running.absorb(shared, group);
            }
            None => {
                let mut first = group.remove(0);
                if group.is_empty() || first.absorb(shared, group).is_ok() {
                    engine.batches.push(first);
                }
            }
        }
    }
    for b in &mut engine.batches {
        if b.live() == 0 {
            continue;
        }
        if let Err(e) = b.decode(shared, &mut engine.session, engine.bank.as_ref()) {
            b.fail(&e);
        }
    }
    engine.drop_finished(shared);
    true
}

/// Takes queued requests that fit into `engine` now, oldest first, grouped by adapter set
/// (not prefilled yet); with adapter slots, every set fed through them in one group, each
/// row given the slot of its set (copied in if not resident).
///
/// Room: at most `max_batch` rows in flight on the engine. Context: left padding makes a
/// batch as wide as its widest row, and it grows by one column per step until its longest
/// row finishes: both must fit the context. A request that does not fit waits, and so do
/// later requests of its adapter set (first come, first served; the batch drains). So does
/// a request whose set needs a slot while every slot holds a set that running rows use.
/// Requests cancelled while queued are answered at once.
fn admit(shared: &Shared, engine: &mut Engine) -> Vec<Batch> {
    let mut room = shared.max_batch.saturating_sub(engine.live_rows());
    let mut q = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
    if room == 0 || q.is_empty() {
        return Vec::new();
    }
    let context = shared.config.context_length;
    let in_place = shared.config.ops == GraphOps::Static;
    // Per adapter set: the group being formed, its width and steps so far.
    let mut groups: Vec<(Batch, usize, usize)> = Vec::new();
    let mut blocked: Vec<AdapterSet> = Vec::new();
    let mut rest = VecDeque::with_capacity(q.len());
    let mut busy = engine
        .bank
        .as_ref()
        .map(|b| engine.busy_slots(b.slots()))
        .unwrap_or_default();
    while let Some(mut item) = q.pop_front() {
        if item.row.check_cancel() {
            continue;
        }
        // Sets fed as LoRA tensors go through the slots when there are slots and their rank
        // fits one; the group of those is keyed by the base model's set.
        let mixed = engine.bank.is_some() && item.slotted;
        let key = if mixed {
            AdapterSet::base()
        } else {
            item.set.clone()
        };
        if room == 0 || blocked.contains(&key) {
            rest.push_back(item);
            continue;
        }
        let g = match groups.iter().position(|(b, _, _)| b.set == key) {
            Some(g) => g,
            None => {
                let (width, steps) = engine
                    .batches
                    .iter()
                    .find(|b| b.set == key)
                    .map_or((0, 0), |b| (b.total, b.steps_left()));
                let fresh = if mixed {
                    Batch::new(key.clone(), base_activation(), Vec::new()).mixed()
                } else {
                    Batch::new(key.clone(), item.activation.clone(), Vec::new())
                };
                groups.push((fresh, width, steps));
                groups.len() - 1
            }
        };
        let (_, width, steps) = &groups[g];
        // In the static layout each row has its own columns: only its own length counts.
        let (w, s) = if in_place {
            (item.row.context.len(), item.row.max_tokens)
        } else {
            (
                (*width).max(item.row.context.len()),
                (*steps).max(item.row.max_tokens),
            )
        };
        if w + s > context {
            blocked.push(key);
            rest.push_back(item);
            continue;
        }
        if mixed && !item.set.is_base() {
            match take_slot(shared, engine.bank.as_mut(), &item, &mut busy) {
                Ok(Some(index)) => {
                    item.row.slot = Some(SlotUse {
                        index,
                        set: item.set.clone(),
                        activation: item.activation.clone(),
                    })
                }
                Ok(None) => {
                    blocked.push(key);
                    rest.push_back(item);
                    continue;
                }
                Err(e) => {
                    item.row.settle(Some(&e));
                    continue;
                }
            }
        }
        let (group, width, steps) = &mut groups[g];
        (*width, *steps) = (w, s);
        group.rows.push(item.row);
        room -= 1;
    }
    *q = rest;
    groups
        .into_iter()
        .map(|(b, _, _)| b)
        .filter(|b| !b.rows.is_empty())
        .collect()
}

/// The base model's activation: no LoRA tensors fed.
fn base_activation() -> Activation {
    Activation::Feed(Default::default())
}

/// The slot of `item`'s adapter set: the one holding it, else a free one it is copied
/// into (marked busy); `None` while every slot is busy.
fn take_slot(
    shared: &Shared,
    bank: Option<&mut SlotBank>,
    item: &Queued,
    busy: &mut [bool],
) -> Result<Option<usize>> {
    let (Some(bank), Activation::Feed(feed)) = (bank, &item.activation) else {
        return Ok(None);
    };
    let slot = match bank.find(&item.set) {
        Some(s) => Some(s),
        None => {
            let weights = feed.weights(&shared.config.lora.modules)?;
            bank.load(&item.set, &weights, busy)?
        }
    };
    if let Some(b) = slot.and_then(|s| busy.get_mut(s)) {
        *b = true;
    }
    Ok(slot)
}

/// Whether a set's activation can go through an adapter slot: fed as LoRA tensors (not
/// `.onnx_adapter` run options) of a rank that fits. A larger set (a merge's rank is its
/// adapters' ranks summed) runs in a batch of its own instead, as without slots.
fn fits_a_slot(shared: &Shared, activation: &Activation) -> Result<bool> {
    Ok(match activation {
        Activation::Feed(feed) => feed.rank()? <= shared.slot_rank,
        Activation::RunOptions(_) => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_wakes_waiters_and_an_owed_wakeup_is_paid_once() {
        let w = Arc::new(Wakeup::default());
        // A ring between looking and sleeping is not missed.
        let seen = w.rings();
        w.ring();
        assert!(w.wait_past(seen, Duration::ZERO));
        // Nothing owed: handing an engine back wakes nobody.
        let seen = w.rings();
        w.pay();
        assert!(!w.wait_past(seen, Duration::from_millis(10)));
        // Owed once (however many things were sent), paid once.
        w.owe();
        w.owe();
        w.pay();
        assert_eq!(w.rings(), seen + 1);
        w.pay();
        assert_eq!(w.rings(), seen + 1);
        // A waiter on another thread wakes on the ring, long before its timeout.
        let seen = w.rings();
        let waiter = {
            let w = w.clone();
            std::thread::spawn(move || w.wait_past(seen, Duration::from_secs(60)))
        };
        std::thread::sleep(Duration::from_millis(20));
        w.owe();
        w.pay();
        assert!(waiter.join().expect("the waiter"), "woken, not timed out");
    }
}
