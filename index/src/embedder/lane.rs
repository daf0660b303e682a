//! The latency path: small requests (a query, a handful of texts) run on one session that
//! uses every core, and requests that arrive while it is busy are run together next.
//!
//! There is no batching thread and no timer. The first caller to find the session free
//! runs what is queued at that moment (a lone query starts at once, so it never waits for
//! company); callers arriving meanwhile queue up and the next of them runs the whole queue
//! as one batch. A caller therefore waits at most for the batch in flight plus its own.
//! The queue is bounded: past [`QueryOptions::max_waiting`](super::QueryOptions) requests,
//! a new one fails at once with [`Error::QueryQueueFull`] instead of waiting ever longer.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::error::{Error, Result};

/// Runs one batch of texts through the model, one vector per text, in order.
pub(crate) type BatchRunner = Box<dyn Fn(&[&str]) -> Result<Vec<Vec<f32>>> + Send + Sync>;

/// A request waiting for the session.
struct Request {
    ticket: u64,
    texts: Vec<String>,
}

#[derive(Default)]
struct LaneState {
    waiting: VecDeque<Request>,
    /// Someone is running a batch now.
    running: bool,
    /// Finished requests, by ticket, until their caller collects them.
    done: HashMap<u64, Result<Vec<Vec<f32>>>>,
    next_ticket: u64,
}

/// One latency-configured session and the queue in front of it.
pub(crate) struct QueryLane {
    run: BatchRunner,
    state: Mutex<LaneState>,
    finished: Condvar,
    /// Most texts per model call (a request larger than this still runs, alone).
    max_batch: usize,
    /// Most requests queued behind the batch in flight.
    max_waiting: usize,
}

impl QueryLane {
    pub(crate) fn new(run: BatchRunner, max_batch: usize, max_waiting: usize) -> Self {
        Self {
            run,
            state: Mutex::new(LaneState::default()),
            finished: Condvar::new(),
            max_batch: max_batch.max(1),
            max_waiting,
        }
    }

    fn lock(&self) -> MutexGuard<'_, LaneState> {
        // The state is consistent between statements: a panic elsewhere cannot break it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Embeds `texts`, batched with whatever else is queued.
    pub(crate) fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut state = self.lock();
        let must_wait = state.running || !state.waiting.is_empty();
        if must_wait && state.waiting.len() >= self.max_waiting {
            return Err(Error::QueryQueueFull {
                limit: self.max_waiting,
            });
        }
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.waiting.push_back(Request {
            ticket,
            texts: texts.iter().map(|t| (*t).to_owned()).collect(),
        });
        loop {
            if let Some(result) = state.done.remove(&ticket) {
                return result;
            }
            if state.running {
                state = self
                    .finished
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                continue;
            }
            // The session is free: run the queue's head (ours may be behind it).
            state.running = true;
            let batch = self.take_batch(&mut state);
            drop(state);
            let mut leader = Leader {
                lane: self,
                tickets: batch.iter().map(|r| r.ticket).collect(),
            };
            let results = self.run_batch(&batch);
            state = self.lock();
            for (request, result) in batch.iter().zip(results) {
                state.done.insert(request.ticket, result);
            }
            leader.tickets.clear();
            state.running = false;
            self.finished.notify_all();
        }
    }

    /// The queue's head: whole requests, up to `max_batch` texts (at least one request).
    fn take_batch(&self, state: &mut LaneState) -> Vec<Request> {
        let mut batch = Vec::new();
        let mut texts = 0;
        while let Some(next) = state.waiting.front() {
            if !batch.is_empty() && texts + next.texts.len() > self.max_batch {
                break;
            }
            texts += next.texts.len();
            batch.extend(state.waiting.pop_front());
        }
        batch
    }

    /// Runs the requests as one model call; each gets its own vectors (or the error).
    fn run_batch(&self, batch: &[Request]) -> Vec<Result<Vec<Vec<f32>>>> {
        let texts: Vec<&str> = batch
            .iter()
            .flat_map(|r| r.texts.iter().map(String::as_str))
            .collect();
        match (self.run)(&texts) {
            Ok(vectors) if vectors.len() == texts.len() => {
                let mut vectors = vectors.into_iter();
                batch
                    .iter()
                    .map(|r| Ok(vectors.by_ref().take(r.texts.len()).collect()))
                    .collect()
            }
            Ok(vectors) => {
                let message = format!(
                    "model returned {} vectors for {} texts",
                    vectors.len(),
                    texts.len()
                );
                batch
                    .iter()
                    .map(|_| Err(Error::Embedding(message.clone())))
                    .collect()
            }
            Err(e) => {
                let message = e.to_string();
                batch
                    .iter()
                    .map(|_| Err(Error::Embedding(message.clone())))
                    .collect()
            }
        }
    }
}

/// The caller running a batch. If the model call panics, the requests of the batch get an
/// error and the session is released, so other callers do not wait forever.
struct Leader<'a> {
    lane: &'a QueryLane,
    /// Requests taken and not yet answered.
    tickets: Vec<u64>,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if self.tickets.is_empty() {
            return;
        }
        let mut state = self.lane.lock();
        for &ticket in &self.tickets {
            state.done.insert(
                ticket,
                Err(Error::Embedding("embedding worker panicked".into())),
            );
        }
        state.running = false;
        self.lane.finished.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier, mpsc};

    use super::*;

    /// A runner that returns `[len, batch size]` per text and counts its calls.
    fn counting_runner(calls: Arc<AtomicUsize>) -> BatchRunner {
        Box::new(move |texts: &[&str]| {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(texts
                .iter()
                .map(|t| vec![t.len() as f32, texts.len() as f32])
                .collect())
        })
    }

    #[test]
    fn a_lone_request_runs_at_once_and_gets_its_own_vectors() {
        let calls = Arc::new(AtomicUsize::new(0));
        let lane = QueryLane::new(counting_runner(calls.clone()), 8, 4);
        let v = lane.embed(&["abc", "de"]).expect("embeds");
        assert_eq!(v, vec![vec![3.0, 2.0], vec![2.0, 2.0]]);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    /// While one batch runs, later requests queue and then run together as one call;
    /// past the bound a request fails at once with the typed error.
    #[test]
    fn requests_arriving_while_busy_are_batched_and_the_queue_is_bounded() {
        let (entered_tx, entered_rx) = mpsc::channel::<usize>();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let runner: BatchRunner = Box::new(move |texts: &[&str]| {
            let _ = entered_tx.send(texts.len());
            let _ = release_rx.lock().map(|r| r.recv());
            Ok(texts.iter().map(|t| vec![t.len() as f32]).collect())
        });
        let lane = Arc::new(QueryLane::new(runner, 8, 3));
        std::thread::scope(|s| {
            let first = s.spawn(|| lane.embed(&["first"]));
            assert_eq!(
                entered_rx.recv().ok(),
                Some(1),
                "the lone request ran alone"
            );
            // The session is busy: three more queue up (the bound), the fifth is refused.
            let start = Arc::new(Barrier::new(4));
            let queued: Vec<_> = ["a", "bb", "ccc"]
                .into_iter()
                .map(|t| {
                    let (lane, start) = (lane.clone(), start.clone());
                    s.spawn(move || {
                        start.wait();
                        lane.embed(&[t])
                    })
                })
                .collect();
            start.wait();
            while lane.lock().waiting.len() < 3 {
                std::thread::yield_now();
            }
            match lane.embed(&["one too many"]) {
                Err(Error::QueryQueueFull { limit: 3 }) => {}
                other => panic!("expected QueryQueueFull, got {other:?}"),
            }
            release_tx.send(()).expect("release the first batch");
            assert_eq!(
                entered_rx.recv().ok(),
                Some(3),
                "the queue ran as one batch"
            );
            release_tx.send(()).expect("release the second batch");
            assert_eq!(first.join().expect("joins").expect("ok"), vec![vec![5.0]]);
            let mut got: Vec<f32> = queued
                .into_iter()
                .map(|h| h.join().expect("joins").expect("ok")[0][0])
                .collect();
            got.sort_by(f32::total_cmp);
            assert_eq!(got, vec![1.0, 2.0, 3.0]);
        });
    }

    #[test]
    fn a_batch_is_cut_at_max_batch_texts() {
        let calls = Arc::new(AtomicUsize::new(0));
        let lane = QueryLane::new(counting_runner(calls), 2, 8);
        let mut state = lane.lock();
        for (ticket, n) in [(0, 1), (1, 1), (2, 1), (3, 5)] {
            state.waiting.push_back(Request {
                ticket,
                texts: vec!["x".into(); n],
            });
        }
        let sizes = |b: Vec<Request>| b.iter().map(|r| r.texts.len()).collect::<Vec<_>>();
        assert_eq!(sizes(lane.take_batch(&mut state)), vec![1, 1]);
        assert_eq!(sizes(lane.take_batch(&mut state)), vec![1]);
        // A request larger than the cap still runs, alone.
        assert_eq!(sizes(lane.take_batch(&mut state)), vec![5]);
    }

    #[test]
    fn a_panicking_model_fails_the_batch_and_frees_the_session() {
        let calls = AtomicUsize::new(0);
        let runner: BatchRunner = Box::new(move |texts: &[&str]| {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("model crashed");
            }
            Ok(texts.iter().map(|_| vec![1.0]).collect())
        });
        let lane = QueryLane::new(runner, 8, 8);
        let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lane.embed(&["x"])));
        assert!(crashed.is_err());
        assert!(!lane.lock().running, "the session is free again");
        assert_eq!(lane.embed(&["y"]).expect("runs"), vec![vec![1.0]]);
    }
}
