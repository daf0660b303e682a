//! A thread of its own for each engine that runs fixed decode steps (CUDA graphs).
//!
//! ONNX Runtime's CUDA provider keeps a per-thread context (its CUDA graphs, cuBLAS and cuDNN
//! handles) on every thread that runs a session built with `enable_cuda_graph`, and frees
//! none before the session goes: a plain session hands its context back after each run, but
//! a capturing one keeps it for the graphs it holds. Callers' threads drive the generator
//! (`queue`), and a server's threads come and go: each new one would capture every step's
//! graph again and leave its context behind. So every run of such an engine (decode rounds,
//! prefills, scoring) goes through the engine's own thread, which lives as long as the
//! engine. Fixed steps forced on the CPU (`cuda_graphs: Some(true)`, what the tests run) take
//! the same path.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::mpsc;

use super::pool::Engine;
use crate::error::{Error, Result};

type Job = Box<dyn FnOnce() + Send>;

/// The thread an engine's work runs on: it runs the jobs sent to it one at a time, and ends
/// when the engine (holding the only long-lived sender) is dropped.
pub(super) struct EngineThread {
    jobs: mpsc::Sender<Job>,
}

impl EngineThread {
    /// Starts engine `index`'s thread.
    pub(super) fn spawn(index: usize) -> Result<Self> {
        let (jobs, inbox) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(format!("tribute-engine-{index}"))
            .spawn(move || {
                for job in inbox {
                    job();
                }
            })
            .map_err(|_| Error::internal("the operating system refused an engine thread"))?;
        Ok(EngineThread { jobs })
    }
}

/// What runs on an engine's thread: an engine, which may have one.
pub(super) trait Pinned: Send + 'static {
    /// The thread its work goes through, if it has one.
    fn thread(&self) -> Option<&EngineThread>;
}

impl Pinned for Engine {
    fn thread(&self) -> Option<&EngineThread> {
        self.thread.as_ref()
    }
}

/// Runs `f` on the engine in `slot`: on the engine's thread if it has one (the engine travels
/// there and back), else on this one. A panic in `f` reaches this thread as it would have
/// inline, the engine first put back into `slot`.
pub(super) fn run_on<E: Pinned, R: Send + 'static>(
    slot: &mut Option<E>,
    f: impl FnOnce(&mut E) -> R + Send + 'static,
) -> R {
    let engine = slot
        .as_mut()
        .expect("a lease holds its engine until dropped");
    let Some(jobs) = engine.thread().map(|t| t.jobs.clone()) else {
        return f(engine);
    };
    let mut engine = slot.take().expect("a lease holds its engine until dropped");
    let (back, returned) = mpsc::sync_channel(1);
    let job: Job = Box::new(move || {
        let out = catch_unwind(AssertUnwindSafe(|| f(&mut engine)));
        // The caller waits for this; it cannot be gone.
        let _ = back.send((engine, out));
    });
    // The thread runs every job to its end (panics are caught), so it lives while its
    // engine does, and the job comes back.
    let sent = jobs.send(job).is_ok();
    assert!(sent, "an engine's thread lives as long as the engine");
    let (engine, out) = returned
        .recv()
        .expect("an engine's thread sends every job's engine back");
    *slot = Some(engine);
    out.unwrap_or_else(|panic| resume_unwind(panic))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        thread: Option<EngineThread>,
        runs: Vec<String>,
    }

    impl Pinned for Fake {
        fn thread(&self) -> Option<&EngineThread> {
            self.thread.as_ref()
        }
    }

    fn here() -> String {
        std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_owned()
    }

    /// Work sent from any caller's thread runs on the engine's one thread, and the engine
    /// comes back with what the work did to it; a panic reaches the caller with the engine
    /// back in place; an engine without a thread runs its work where it is called.
    #[test]
    fn an_engines_work_runs_on_its_own_thread_whoever_calls() {
        let mut slot = Some(Fake {
            thread: Some(EngineThread::spawn(7).expect("thread")),
            runs: Vec::new(),
        });
        let name = |e: &mut Fake| {
            e.runs.push(here());
            e.runs.len()
        };
        assert_eq!(run_on(&mut slot, name), 1);
        let slot = std::thread::scope(|s| {
            s.spawn(move || {
                let mut slot = slot;
                assert_eq!(run_on(&mut slot, name), 2);
                slot
            })
            .join()
            .expect("caller thread")
        });
        let mut slot = slot;
        assert_eq!(run_on(&mut slot, name), 3);
        let runs = &slot.as_ref().expect("engine back").runs;
        assert_eq!(runs, &["tribute-engine-7"; 3]);

        let caught = std::panic::catch_unwind(AssertUnwindSafe(|| {
            run_on(&mut slot, |_: &mut Fake| -> () { panic!("in the job") })
        }));
        assert!(caught.is_err(), "the job's panic reaches the caller");
        assert_eq!(
            run_on(&mut slot, name),
            4,
            "the engine and its thread survive it"
        );

        let mut unpinned = Some(Fake {
            thread: None,
            runs: Vec::new(),
        });
        run_on(&mut unpinned, name);
        assert_eq!(unpinned.expect("engine").runs, [here()]);
    }
}
