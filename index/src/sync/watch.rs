//! Keeping a knowledge base in sync while the folder changes: [`SyncRequest::watch`].

use std::path::{Component, Path};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::Duration;

use notify_debouncer_mini::notify::RecursiveMode;
use notify_debouncer_mini::{DebounceEventResult, new_debouncer};

use super::{SyncReport, SyncRequest, canonical_folder};
use crate::error::{Error, Result};
use crate::index::Index;

/// How often a watch looks at its stop flag while nothing happens.
const STOP_POLL: Duration = Duration::from_millis(100);

impl SyncRequest<'_> {
    /// Syncs once, then again after each burst of changes in the folder (changes closer
    /// together than the [debounce](SyncRequest::debounce) are one burst), until `stop`
    /// is set. `on_sync` gets the index and the report after every sync.
    ///
    /// Each sync rescans the folder (hashing is cheap next to parsing and embedding;
    /// unchanged files are not read again), so no change is missed even when the
    /// operating system drops events. Changes to hidden entries and to the knowledge
    /// base's own directory do not start a sync.
    ///
    /// Errors: [`Error::Watch`] when the folder cannot be watched or the watcher stops;
    /// a failing write to the knowledge base ends the watch with that error.
    pub fn watch(
        mut self,
        stop: &AtomicBool,
        mut on_sync: impl FnMut(&Index, &SyncReport),
    ) -> Result<()> {
        let root = canonical_folder(&self.dir)?;
        let watch_error = |reason: String| Error::Watch {
            path: root.clone(),
            reason,
        };
        let (tx, rx) = channel::<DebounceEventResult>();
        let mut debouncer =
            new_debouncer(self.debounce, tx).map_err(|e| watch_error(e.to_string()))?;
        debouncer
            .watcher()
            .watch(&root, RecursiveMode::Recursive)
            .map_err(|e| watch_error(e.to_string()))?;
        let excluded = self.excluded_dir();

        // The first sync runs once the watch is set, so no change slips in between.
        let report = self.pass(&root)?;
        on_sync(&*self.index, &report);
        while !stop.load(Ordering::Relaxed) {
            match rx.recv_timeout(STOP_POLL) {
                Ok(Ok(events)) => {
                    let relevant = events
                        .iter()
                        .any(|e| starts_sync(&e.path, &root, excluded.as_deref()));
                    if !relevant {
                        continue;
                    }
                }
                // Events may have been lost: a rescan catches up with whatever happened.
                Ok(Err(e)) => {
                    tracing::warn!(target: "tribute_index::sync", "watch: {e}; rescanning");
                }
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(watch_error("the file watcher stopped".into()));
                }
            }
            // Whatever else is queued is covered by the rescan.
            while rx.try_recv().is_ok() {}
            let report = self.pass(&root)?;
            on_sync(&*self.index, &report);
        }
        Ok(())
    }
}

/// Whether a change at `path` may change what a sync does: not inside the knowledge
/// base's own directory, and not a hidden entry of the folder.
fn starts_sync(path: &Path, root: &Path, excluded: Option<&Path>) -> bool {
    if excluded.is_some_and(|x| path.starts_with(x)) {
        return false;
    }
    let Ok(rel) = path.strip_prefix(root) else {
        return true;
    };
    !rel.components().any(|c| match c {
        Component::Normal(name) => name.to_string_lossy().starts_with('.'),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn hidden_entries_and_the_own_index_do_not_start_a_sync() {
        let root = Path::new("/docs");
        let kb = Path::new("/docs/kb");
        let starts = |p: &str| super::starts_sync(Path::new(p), root, Some(kb));
        assert!(starts("/docs/a.md"));
        assert!(starts("/docs/sub/b.txt"));
        assert!(!starts("/docs/.git/index"));
        assert!(!starts("/docs/sub/.a.md.swp"));
        assert!(!starts("/docs/kb/log.jsonl"));
        // The folder itself (deleted, moved): rescan.
        assert!(starts("/docs"));
    }
}
