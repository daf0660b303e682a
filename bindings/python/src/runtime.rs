//! The package's one tokio runtime, and the two ways Python waits on Rust work: blocking
//! but interruptible by Ctrl-C ([`wait_interruptibly`]), or as an asyncio future
//! ([`future_from`]).
//!
//! The runtime is created on first use and re-created in a child process after `fork()`
//! (its threads do not survive a fork; the parent's runtime is leaked in the child, never
//! dropped, since dropping would wait for threads that do not exist there).

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tokio::runtime::Runtime;
use tribute::common::PerProcess;

use crate::lock;

/// The runtime, per process (see `tribute::common::PerProcess`).
static RUNTIME: PerProcess<Runtime> = PerProcess::new();

/// How often a blocked call looks for Ctrl-C (Python's pending signals).
const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// The process's tokio runtime (a new one in a forked child).
pub(crate) fn runtime() -> PyResult<Arc<Runtime>> {
    RUNTIME.get_or_try_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tribute")
            .enable_all()
            .build()
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start tokio: {e}")))
    })
}

/// Runs `work` on the runtime's blocking pool while this thread waits with the GIL
/// released, waking every 50 ms to run Python's signal handlers: Ctrl-C raises
/// `KeyboardInterrupt` here at once, after `on_interrupt` was called (to cancel `work`,
/// which then finishes in the background).
pub(crate) fn wait_interruptibly<T, F>(
    py: Python<'_>,
    work: F,
    on_interrupt: impl FnOnce(),
) -> PyResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (tx, rx) = mpsc::sync_channel(1);
    runtime()?.spawn_blocking(move || {
        // The receiver is gone only when the caller was interrupted.
        let _ = tx.send(work());
    });
    let rx = Mutex::new(rx);
    loop {
        let received = py.detach(|| lock(&rx).recv_timeout(SIGNAL_POLL));
        // A Ctrl-C during the wait cancels, also when the value arrived meanwhile.
        if let Err(e) = py.check_signals() {
            on_interrupt();
            return Err(e);
        }
        match received {
            Ok(value) => return Ok(value),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(PyRuntimeError::new_err(
                    "the background task ended without a result (it panicked)",
                ));
            }
        }
    }
}

/// Called by asyncio when the future of [`future_from`] is done: runs `on_cancel` when it
/// was cancelled (the awaiting task was cancelled or timed out).
#[pyclass(module = "tribute._native", frozen)]
pub(crate) struct OnCancel {
    action: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

#[pymethods]
impl OnCancel {
    fn __call__(&self, future: &Bound<'_, PyAny>) -> PyResult<()> {
        if future.call_method0("cancelled")?.is_truthy()?
            && let Some(action) = lock(&self.action).take()
        {
            action();
        }
        Ok(())
    }
}

/// Sets the result (or exception) of a future from the event loop's thread, unless the
/// future was cancelled meanwhile.
#[pyclass(module = "tribute._native", frozen)]
pub(crate) struct Resolve {
    future: Py<PyAny>,
    result: Mutex<Option<PyResult<Py<PyAny>>>>,
}

#[pymethods]
impl Resolve {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let future = self.future.bind(py);
        if future.call_method0("done")?.is_truthy()? {
            return Ok(());
        }
        match lock(&self.result).take() {
            Some(Ok(value)) => future.call_method1("set_result", (value,))?,
            Some(Err(e)) => future.call_method1("set_exception", (e.into_value(py),))?,
            None => return Ok(()),
        };
        Ok(())
    }
}

/// An asyncio future (of the running loop) resolved with the result of `work`, which runs
/// on the runtime's blocking pool without the GIL; `convert` turns its value into a
/// Python object. Cancelling the future calls `on_cancel`.
pub(crate) fn future_from<'py, T, F, C>(
    py: Python<'py>,
    work: F,
    convert: C,
    on_cancel: Option<Box<dyn FnOnce() + Send>>,
) -> PyResult<Bound<'py, PyAny>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
    C: FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
{
    let event_loop = PyModule::import(py, "asyncio")?.call_method0("get_running_loop")?;
    let future = event_loop.call_method0("create_future")?;
    if let Some(action) = on_cancel {
        let callback = Py::new(
            py,
            OnCancel {
                action: Mutex::new(Some(action)),
            },
        )?;
        future.call_method1("add_done_callback", (callback,))?;
    }
    let (loop_ref, future_ref) = (event_loop.unbind(), future.clone().unbind());
    runtime()?.spawn_blocking(move || {
        let value = work();
        Python::attach(|py| {
            let result = convert(py, value);
            let resolve = Resolve {
                future: future_ref,
                result: Mutex::new(Some(result)),
            };
            // Fails only when the loop is closed: nobody is waiting any more.
            let _ = Py::new(py, resolve).and_then(|r| {
                loop_ref
                    .bind(py)
                    .call_method1("call_soon_threadsafe", (r,))
                    .map(drop)
            });
        });
    });
    Ok(future)
}

/// Starts the work of a [`coroutine`] when it is first awaited.
type Start = Box<dyn for<'py> FnOnce(Python<'py>) -> PyResult<Bound<'py, PyAny>> + Send>;

/// The start of a coroutine's work, called once from `tribute._aio.run`.
#[pyclass(module = "tribute._native", frozen)]
pub(crate) struct Starter {
    start: Mutex<Option<Start>>,
}

#[pymethods]
impl Starter {
    fn __call__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let start = lock(&self.start)
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("this coroutine was already awaited"))?;
        start(py)
    }
}

/// A real Python coroutine (so `asyncio.run(engine.ask_async(q))` works) that, once
/// awaited inside a running event loop, runs [`future_from`] with these arguments and
/// awaits its future. Like any coroutine, nothing runs before it is awaited.
pub(crate) fn coroutine<'py, T, F, C>(
    py: Python<'py>,
    work: F,
    convert: C,
    on_cancel: Option<Box<dyn FnOnce() + Send>>,
) -> PyResult<Bound<'py, PyAny>>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
    C: FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
{
    let start: Start = Box::new(move |py| future_from(py, work, convert, on_cancel));
    let starter = Py::new(
        py,
        Starter {
            start: Mutex::new(Some(start)),
        },
    )?;
    PyModule::import(py, "tribute._aio")?.call_method1("run", (starter,))
}
