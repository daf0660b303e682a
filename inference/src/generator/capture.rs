//! When fixed decode steps are captured as CUDA graphs, and how each run of one goes
//! (`graph_step` holds the steps themselves).
//!
//! - [`GraphSteps`]: graph ids for new steps while capturing; the cap of [`MAX_GRAPHS`]
//!   captures; run options with `gpu_graph_id` -1 for every run that is not a captured step
//!   (ONNX Runtime would capture a run without one as graph 0).
//! - [`CaptureRuns`]: ONNX Runtime's CUDA provider captures a graph id after one or two plain
//!   runs (the count differs between its versions) and keeps graphs and counts runs per
//!   thread; a step's first [`CAPTURE_RUNS`] runs on each thread run alone.
//! - [`DEVICE`]: captures run alone. ONNX Runtime captures in CUDA's global mode, where another
//!   thread's allocation or synchronous copy during a capture fails that call and the
//!   capture; every other device use of the generator holds the lock shared.
//! - [`run_or_fall_back`]: a capture that fails is reported once (a warning), run again
//!   uncaptured, and steps run uncaptured from then on.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::ThreadId;

use ort::session::{NoSelectedOutputs, RunOptions};

use crate::error::{Error, Result};

/// Most CUDA graphs a generator captures (a graph id on one thread); later steps, and
/// threads new to a step, run uncaptured.
pub(super) const MAX_GRAPHS: i64 = 1024;

/// Runs of a graph id on one thread by the end of which ONNX Runtime has captured it: its
/// CUDA provider captures after `min_num_runs_before_cuda_graph_capture_` plain runs (for
/// their allocations), 1 in some versions and 2 in others, so three cover both.
const CAPTURE_RUNS: u32 = 3;

/// Work on the device, shared (copies, the sampler, uncaptured runs) or alone (a run that
/// may capture): ONNX Runtime captures in CUDA's global mode, where another thread's
/// allocation or synchronous copy during a capture fails that call and the capture.
static DEVICE: RwLock<()> = RwLock::new(());

/// Holds off captures while it lives (see [`DEVICE`]).
pub(super) fn device_use() -> RwLockReadGuard<'static, ()> {
    DEVICE.read().unwrap_or_else(PoisonError::into_inner)
}

/// The device alone while it lives: for a run that may capture (see [`DEVICE`]).
pub(super) fn device_alone() -> RwLockWriteGuard<'static, ()> {
    DEVICE.write().unwrap_or_else(PoisonError::into_inner)
}

/// How a generator runs its decode steps as fixed steps (see the module).
pub(super) struct GraphSteps {
    /// The sessions were built capturing CUDA graphs.
    pub(super) sessions_capture: bool,
    /// New steps are still captured: no capture failed, fewer than [`MAX_GRAPHS`] so far.
    capturing: AtomicBool,
    next_id: AtomicI64,
    /// Captures counted so far (a graph id on a thread).
    captures: AtomicI64,
    /// `gpu_graph_id` -1, for every run that is not a captured step.
    uncaptured: RunOptions<NoSelectedOutputs>,
}

impl GraphSteps {
    /// Fixed steps, captured as CUDA graphs if the sessions were built with them.
    pub(super) fn new(sessions_capture: bool) -> Result<Self> {
        let mut uncaptured = RunOptions::new()?;
        uncaptured.set("gpu_graph_id", "-1")?;
        Ok(GraphSteps {
            sessions_capture,
            capturing: AtomicBool::new(sessions_capture),
            next_id: AtomicI64::new(0),
            captures: AtomicI64::new(0),
            uncaptured,
        })
    }

    /// Run options for a run that is not a captured step, on sessions that capture.
    pub(super) fn uncaptured(&self) -> Option<&RunOptions<NoSelectedOutputs>> {
        self.sessions_capture.then_some(&self.uncaptured)
    }

    /// Whether new steps are captured.
    pub(super) fn capturing(&self) -> bool {
        self.capturing.load(Ordering::Relaxed)
    }

    /// The graph id of a new step: a fresh one while capturing, else -1.
    pub(super) fn next_graph(&self) -> i64 {
        if !self.capturing() {
            return -1;
        }
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether a thread new to a step may capture its graph: while capturing, and for the
    /// first [`MAX_GRAPHS`] captures.
    fn take_capture(&self) -> bool {
        if !self.capturing() {
            return false;
        }
        if self.captures.fetch_add(1, Ordering::Relaxed) < MAX_GRAPHS {
            return true;
        }
        if self.capturing.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                "{MAX_GRAPHS} CUDA graphs captured (ONNX Runtime keeps each for the session's \
                 life); later decode steps run uncaptured"
            );
        }
        false
    }

    /// A captured step failed: warns once, and no step is captured from then on.
    fn capture_failed(&self, e: &Error) {
        if self.capturing.swap(false, Ordering::Relaxed) {
            tracing::warn!("CUDA graph capture failed ({e}); decode steps run uncaptured");
        }
    }

    /// Rows to allocate for `rows` rows: the next power of two, so that batches of nearby
    /// sizes share a captured shape.
    pub(super) fn row_capacity(rows: usize) -> usize {
        rows.max(1).next_power_of_two()
    }
}

/// Runs a step once with graph `*graph_id`. A run with a graph that fails (a capture ONNX
/// Runtime could not make) is reported ([`GraphSteps::capture_failed`]: a warning, and no new
/// step captures) and run again uncaptured; the step stays uncaptured (`*graph_id` -1). The
/// retry is safe: ONNX Runtime ends the capture after a failed run too, and nothing captured
/// ran.
pub(super) fn run_or_fall_back(
    steps: &GraphSteps,
    graph_id: &mut i64,
    mut run: impl FnMut(i64) -> Result<()>,
) -> Result<()> {
    match run(*graph_id) {
        Err(e) if *graph_id >= 0 => {
            steps.capture_failed(&e);
            *graph_id = -1; // uncaptured from now on, on every thread
            run(-1)
        }
        ran => ran,
    }
}

/// A step's runs on each thread that ran it. ONNX Runtime's CUDA provider keeps graphs in a
/// per-thread context and counts a graph id's runs there, and any caller's thread may drive a
/// step, so each thread captures the step's graph for itself: its first [`CAPTURE_RUNS`] runs
/// run alone, and it counts as one capture toward [`MAX_GRAPHS`] (past them, or once
/// capturing stopped, a thread new to the step runs it uncaptured).
#[derive(Default)]
pub(super) struct CaptureRuns {
    /// (thread, its runs of the step, whether it runs the step's graph).
    threads: Vec<(ThreadId, u32, bool)>,
}

/// How one run of a fixed step goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RunKind {
    /// With the step's graph id, alone: ONNX Runtime may capture it on this run.
    Capture,
    /// With the step's graph id, the graph captured: a replay.
    Replay,
    /// Without a graph (`gpu_graph_id` -1 on sessions that capture).
    Plain,
}

impl CaptureRuns {
    /// How the calling thread's next run of a step with `graph_id` goes.
    pub(super) fn next(&mut self, graph_id: i64, steps: &GraphSteps) -> RunKind {
        if graph_id < 0 {
            return RunKind::Plain;
        }
        let here = std::thread::current().id();
        let i = match self.threads.iter().position(|t| t.0 == here) {
            Some(i) => i,
            None => {
                self.threads.push((here, 0, steps.take_capture()));
                self.threads.len() - 1
            }
        };
        let (_, runs, graph) = &mut self.threads[i];
        if !*graph {
            return RunKind::Plain;
        }
        *runs = runs.saturating_add(1);
        if *runs <= CAPTURE_RUNS {
            RunKind::Capture
        } else {
            RunKind::Replay
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each new step gets a graph of its own until a capture fails; captures are counted
    /// until [`MAX_GRAPHS`], and from then on steps run uncaptured; every other run says -1.
    #[test]
    fn graph_ids_are_fresh_until_capture_fails_or_runs_out() {
        let _ort = tribute_common::ort_library::environment().expect("ONNX Runtime");
        let steps = GraphSteps::new(true).expect("steps");
        assert!(steps.uncaptured().is_some());
        assert_eq!((steps.next_graph(), steps.next_graph()), (0, 1));
        steps.capture_failed(&Error::internal("capture"));
        assert!(!steps.capturing());
        assert_eq!(steps.next_graph(), -1);
        assert!(!steps.take_capture());

        let steps = GraphSteps::new(true).expect("steps");
        for _ in 0..MAX_GRAPHS {
            assert!(steps.take_capture());
        }
        assert!(!steps.take_capture(), "past the cap");
        assert!(!steps.capturing());
        assert_eq!(steps.next_graph(), -1);

        // Sessions that do not capture (the CPU): fixed steps, no graph ids, plain runs.
        let steps = GraphSteps::new(false).expect("steps");
        assert!(steps.uncaptured().is_none());
        assert_eq!(steps.next_graph(), -1);
    }

    /// A captured run that fails is reported and run again without a graph, and the step
    /// stays uncaptured; a failure without a graph, or of the retry, is the step's error.
    #[test]
    fn a_failed_capture_runs_again_uncaptured() {
        let _ort = tribute_common::ort_library::environment().expect("ONNX Runtime");
        let steps = GraphSteps::new(true).expect("steps");
        let (mut id, mut tried) = (steps.next_graph(), Vec::new());
        let ran = run_or_fall_back(&steps, &mut id, |g| {
            tried.push(g);
            if g >= 0 {
                Err(Error::internal("capture"))
            } else {
                Ok(())
            }
        });
        assert!(ran.is_ok());
        assert_eq!((tried, id), (vec![0, -1], -1));
        assert!(!steps.capturing(), "reported: no new step captures");

        let fails = |_: i64| -> Result<()> { Err(Error::internal("run")) };
        let steps = GraphSteps::new(true).expect("steps");
        let mut id = steps.next_graph();
        assert!(
            run_or_fall_back(&steps, &mut id, fails).is_err(),
            "the retry failed too"
        );
        let mut id = -1;
        let mut tried = 0;
        let ran = run_or_fall_back(&steps, &mut id, |_| {
            tried += 1;
            Err(Error::internal("run"))
        });
        assert!(ran.is_err());
        assert_eq!(tried, 1, "no retry without a graph");
        let mut id = 3;
        assert!(run_or_fall_back(&steps, &mut id, |_| Ok(())).is_ok());
        assert_eq!(id, 3, "a run that succeeds keeps its graph");
    }

    /// Every thread that runs a step runs its first three runs of it alone (one of them is
    /// ONNX Runtime's capture on that thread), then replays; each such thread counts one
    /// capture, and a thread that comes past the cap runs the step without its graph.
    #[test]
    fn each_thread_captures_a_step_alone_once() {
        let _ort = tribute_common::ort_library::environment().expect("ONNX Runtime");
        use RunKind::{Capture, Plain, Replay};
        let runs = |c: &mut CaptureRuns, steps: &GraphSteps, n: usize| -> Vec<RunKind> {
            (0..n).map(|_| c.next(0, steps)).collect()
        };
        let steps = GraphSteps::new(true).expect("steps");
        let mut step = CaptureRuns::default();
        assert_eq!(
            runs(&mut step, &steps, 5),
            [Capture, Capture, Capture, Replay, Replay]
        );
        std::thread::scope(|s| {
            s.spawn(|| {
                assert_eq!(
                    runs(&mut step, &steps, 4),
                    [Capture, Capture, Capture, Replay]
                );
            });
        });
        assert_eq!(
            runs(&mut step, &steps, 1),
            [Replay],
            "this thread's graph is kept"
        );
        assert_eq!(steps.captures.load(Ordering::Relaxed), 2);
        assert_eq!(
            CaptureRuns::default().next(-1, &steps),
            Plain,
            "an uncaptured step"
        );

        // The cap reached: a thread new to the step runs it plainly; the others replay.
        while steps.take_capture() {}
        std::thread::scope(|s| {
            s.spawn(|| assert_eq!(runs(&mut step, &steps, 4), [Plain; 4]));
        });
        assert_eq!(runs(&mut step, &steps, 1), [Replay]);
    }

    #[test]
    fn rows_are_allocated_in_powers_of_two() {
        let caps: Vec<usize> = [0, 1, 2, 3, 5, 8, 9, 32]
            .map(GraphSteps::row_capacity)
            .into();
        assert_eq!(caps, [1, 1, 2, 4, 8, 8, 16, 32]);
    }
}
