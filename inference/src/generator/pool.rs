//! The sessions of one model, each with its running batches, and the leases that check
//! them out. Scheduling (what a session runs next) lives in `queue`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use ort::session::Session;

use super::Shared;
use super::batch::Batch;
use super::engine_thread::{EngineThread, run_on};
use super::graph_step::SpareBuffers;
use super::slots::SlotBank;
use crate::error::Result;

/// A session and the batches it is decoding (one per adapter set, stepped in turn; with
/// adapter slots, one for every set fed through the slots).
pub(super) struct Engine {
    pub(super) session: Session,
    pub(super) batches: Vec<Batch>,
    /// The adapter slots this session feeds, when they are on.
    pub(super) bank: Option<SlotBank>,
    /// With fixed decode steps: buffers of finished batches, for the next ones.
    pub(super) spares: SpareBuffers,
    /// With fixed decode steps: the thread every run of this engine goes through.
    pub(super) thread: Option<EngineThread>,
}

impl Engine {
    /// Rows still decoding, over all batches.
    pub(super) fn live_rows(&self) -> usize {
        self.batches.iter().map(Batch::live).sum()
    }

    /// Drops the batches with no row left running; with fixed decode steps their buffers
    /// and steps are kept for the next batches (`SpareBuffers`).
    pub(super) fn drop_finished(&mut self, shared: &Shared) {
        if shared.graph_steps.is_some() {
            for b in self.batches.iter_mut().filter(|b| b.live() == 0) {
                if let Some(kv) = b.kv.take() {
                    self.spares.put(kv, std::mem::take(&mut b.steps));
                }
            }
        }
        self.batches.retain(|b| b.live() > 0);
    }

    /// Which slots running rows use.
    pub(super) fn busy_slots(&self, slots: usize) -> Vec<bool> {
        let mut busy = vec![false; slots];
        for r in self.batches.iter().flat_map(|b| &b.rows) {
            if let Some(s) = r.slot.as_ref().filter(|_| r.live()).map(|s| s.index)
                && let Some(b) = busy.get_mut(s)
            {
                *b = true;
            }
        }
        busy
    }
}

/// A pool of engines over one model: `Session::run` needs `&mut`, so a caller checks one
/// out to run a step (a driver) or a scoring pass.
///
/// Blocking checkouts (scoring) come first: while one waits, drivers take no engine, so a
/// scoring call waits for at most the step that is running. Idle engines are handed out in
/// turn, so that every engine's batches progress.
///
/// A panic while the lock is held cannot leave the list half-updated (every change is one
/// push or removal), so a poisoned lock is used as it is.
pub(super) struct Pool {
    /// Engines in all, idle or checked out.
    size: usize,
    idle: Mutex<VecDeque<Engine>>,
    ready: Condvar,
    /// Blocking checkouts waiting for an engine.
    waiting: AtomicUsize,
}

impl Pool {
    /// Engines over `sessions`, each keeping spare buffers within `spare_bytes`, and each
    /// on a thread of its own when `threads` (fixed decode steps: see `engine_thread`).
    pub(super) fn new(
        sessions: Vec<(Session, Option<SlotBank>)>,
        spare_bytes: usize,
        threads: bool,
    ) -> Result<Self> {
        let mut engines = VecDeque::with_capacity(sessions.len());
        for (i, (session, bank)) in sessions.into_iter().enumerate() {
            engines.push_back(Engine {
                session,
                batches: Vec::new(),
                bank,
                spares: SpareBuffers::new(spare_bytes),
                thread: if threads {
                    Some(EngineThread::spawn(i)?)
                } else {
                    None
                },
            });
        }
        Ok(Pool {
            size: engines.len(),
            idle: Mutex::new(engines),
            ready: Condvar::new(),
            waiting: AtomicUsize::new(0),
        })
    }

    /// Engines in all.
    pub(super) fn size(&self) -> usize {
        self.size
    }

    /// Whether a blocking checkout (scoring) waits for an engine.
    pub(super) fn checkouts_waiting(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) > 0
    }

    /// Waits for an engine, preferring one with nothing running.
    fn checkout(&self) -> Engine {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let pick = idle
                .iter()
                .position(|e| e.batches.is_empty())
                .or((!idle.is_empty()).then_some(0));
            if let Some(engine) = pick.and_then(|i| idle.remove(i)) {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                return engine;
            }
            idle = self
                .ready
                .wait(idle)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// An idle engine for a driver, the longest idle first; none while a blocking checkout
    /// waits.
    fn try_checkout(&self) -> Option<Engine> {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            return None;
        }
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
    }

    fn give_back(&self, e: Engine) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(e);
        self.ready.notify_all();
    }
}

/// An engine checked out of the pool; returned when dropped, with the waiting callers
/// woken if the lease sent them anything or was a blocking one (see `queue::Wakeup`).
pub(super) struct Lease {
    shared: Arc<Shared>,
    engine: Option<Engine>,
    /// Taken by a blocking checkout (scoring), during which no caller could drive.
    blocking: bool,
}

impl Lease {
    /// Waits for a free engine (ahead of drivers).
    pub(super) fn new(shared: &Arc<Shared>) -> Self {
        Lease {
            engine: Some(shared.pool.checkout()),
            shared: shared.clone(),
            blocking: true,
        }
    }
    /// A free engine, if there is one now and no blocking checkout waits.
    pub(super) fn try_new(shared: &Arc<Shared>) -> Option<Self> {
        shared.pool.try_checkout().map(|engine| Lease {
            engine: Some(engine),
            shared: shared.clone(),
            blocking: false,
        })
    }
    /// Runs `f` on the engine, on the engine's thread if it has one (see `engine_thread`):
    /// every run of an engine that has one must go through here.
    pub(super) fn run<R: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Engine) -> R + Send + 'static,
    ) -> R {
        run_on(&mut self.engine, f)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(e) = self.engine.take() {
            self.shared.pool.give_back(e);
        }
        if self.blocking {
            self.shared.wakeup.ring();
        } else {
            self.shared.wakeup.pay();
        }
    }
}
