//! `Index::sync`: a knowledge base kept in step with a folder (on every backend), failure
//! paths, interrupted syncs, and watch mode.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use tribute_index::{
    DocId, Document, Embedder, Index, IndexConfig, Mode, SyncReport, TokenCounter,
};

use crate::backends::backends;
use crate::embedder;

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, text).expect("write");
}

fn bm25_ids(index: &Index, query: &str) -> Vec<String> {
    index
        .search(query)
        .mode(Mode::Bm25)
        .k(10)
        .execute()
        .expect("search")
        .iter()
        .map(|h| h.doc_id.to_string())
        .collect()
}

fn names(paths: &[tribute_index::SkippedFile]) -> Vec<String> {
    paths
        .iter()
        .map(|s| {
            s.path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect()
}

const GUIDE: &str =
    "# Zephyr guide\n\nThe Zephyr drone reads wind gusts with a lidar anemometer.\n";
const BATTERY: &str = "Zephyr cells are lithium-sulfur. Store them at forty percent charge.\n";
const DATA: &str = "{\"id\": \"t1\", \"text\": \"Spring tides come near the new and full moon.\"}\n{\"id\": \"t2\", \"text\": \"A sourdough starter needs flour and water daily.\"}\n";

/// Add, change, delete, rename: hits and counts follow the folder exactly, and documents
/// added another way are left alone.
#[test]
fn sync_mirrors_a_folder_on_every_backend() {
    for (name, mut index, _kb) in backends() {
        let folder = tempfile::tempdir().expect("tempdir");
        let dir = folder.path();
        write(dir, "guide.md", GUIDE);
        write(dir, "notes/battery.txt", BATTERY);
        write(dir, "data.jsonl", DATA);
        write(dir, "table.xlsx", "PK");
        index
            .add_documents(
                vec![Document::new("manual", "Hand-added notes on kite surfing.")],
                None,
            )
            .expect("manual doc");

        let r = index.sync(dir).run().expect("first sync");
        assert_eq!(
            r.added,
            ["data.jsonl", "guide.md", "notes/battery.txt"],
            "{name}"
        );
        assert!(r.replaced.is_empty() && r.deleted.is_empty(), "{name}");
        assert_eq!((r.unchanged, r.documents, r.chunks), (0, 4, 4), "{name}");
        assert_eq!(names(&r.skipped), ["table.xlsx"], "{name}");
        assert!(r.failed.is_empty(), "{name}: {:?}", r.failed);
        assert_eq!(
            (index.document_count(), index.chunk_count()),
            (5, 5),
            "{name}"
        );
        assert_eq!(
            bm25_ids(&index, "lidar anemometer")[0],
            "guide.md",
            "{name}"
        );
        assert_eq!(
            bm25_ids(&index, "sourdough starter")[0],
            "data.jsonl#t2",
            "{name}"
        );
        let rec = index
            .document(&DocId::new("notes/battery.txt"))
            .expect("synced");
        assert_eq!(rec.metadata["sync_path"], "notes/battery.txt", "{name}");

        // Nothing changed: nothing is read again.
        let r = index.sync(dir).run().expect("second sync");
        assert!(!r.changed(), "{name}: {r:?}");
        assert_eq!((r.unchanged, r.documents, r.chunks), (3, 0, 0), "{name}");

        // Change one, delete one, drop a line of the JSONL, add one, rename one.
        write(
            dir,
            "notes/battery.txt",
            "Zephyr cells charge fully in ninety minutes on the dock.\n",
        );
        std::fs::remove_file(dir.join("guide.md")).expect("rm");
        write(
            dir,
            "data.jsonl",
            &DATA[..DATA.find('\n').expect("two lines") + 1],
        );
        write(dir, "new.md", "Pilots land when gusts exceed sixty km/h.\n");
        let r = index.sync(dir).run().expect("third sync");
        assert_eq!(r.added, ["new.md"], "{name}");
        assert_eq!(r.replaced, ["data.jsonl", "notes/battery.txt"], "{name}");
        assert_eq!(r.deleted, ["guide.md"], "{name}");
        assert_eq!((r.unchanged, r.documents, r.chunks), (0, 2, 2), "{name}");
        assert_eq!(
            (index.document_count(), index.chunk_count()),
            (4, 4),
            "{name}"
        );
        assert!(bm25_ids(&index, "lidar anemometer").is_empty(), "{name}");
        assert!(bm25_ids(&index, "sourdough starter").is_empty(), "{name}");
        assert!(bm25_ids(&index, "lithium sulfur").is_empty(), "{name}");
        assert_eq!(
            bm25_ids(&index, "ninety minutes dock"),
            ["notes/battery.txt"],
            "{name}"
        );
        assert_eq!(bm25_ids(&index, "gusts sixty"), ["new.md"], "{name}");
        assert_eq!(
            bm25_ids(&index, "kite surfing"),
            ["manual"],
            "{name}: not synced, kept"
        );

        // A rename: the old id goes, the new one is indexed (not a duplicate of itself).
        std::fs::rename(dir.join("new.md"), dir.join("pilots.md")).expect("mv");
        let r = index.sync(dir).run().expect("rename");
        assert_eq!(
            (r.added.as_slice(), r.deleted.as_slice()),
            (&["pilots.md".to_owned()][..], &["new.md".to_owned()][..]),
            "{name}"
        );
        assert_eq!((r.chunks, r.duplicates.len()), (1, 0), "{name}");
        assert_eq!(bm25_ids(&index, "gusts sixty"), ["pilots.md"], "{name}");
        index.verify().expect("consistent");
    }
}

/// A copy of a file is an exact duplicate (not indexed twice); when the original goes,
/// the copy is indexed in its place rather than left searchable nowhere.
#[test]
fn a_duplicate_is_reindexed_when_its_original_goes() {
    let kb = tempfile::tempdir().expect("tempdir");
    let folder = tempfile::tempdir().expect("tempdir");
    let dir = folder.path();
    let mut index = Index::open(kb.path(), None, IndexConfig::default()).expect("open");
    write(dir, "a.md", GUIDE);
    write(dir, "b.md", GUIDE);
    let r = index.sync(dir).run().expect("sync");
    assert_eq!((r.added.len(), r.chunks, r.duplicates.len()), (2, 1, 1));
    std::fs::remove_file(dir.join("a.md")).expect("rm");
    let r = index.sync(dir).run().expect("sync");
    assert_eq!(
        (r.deleted.as_slice(), r.replaced.as_slice()),
        (&["a.md".to_owned()][..], &["b.md".to_owned()][..])
    );
    assert_eq!((index.document_count(), index.chunk_count()), (1, 1));
    assert_eq!(bm25_ids(&index, "lidar anemometer"), ["b.md"]);
    let r = index.sync(dir).run().expect("sync");
    assert!(!r.changed() && r.unchanged == 1, "{r:?}");
}

/// Files that fail to parse, unknown types, special files, dangling symlinks and symlink
/// loops are reported with their paths and the rest is synced; a file that fails keeps
/// the documents of its earlier version; the knowledge base inside the folder is skipped.
#[test]
fn failures_are_reported_and_do_not_stop_the_rest() {
    let folder = tempfile::tempdir().expect("tempdir");
    let dir = folder.path();
    // The knowledge base lives inside the synced folder (not hidden): never synced.
    let mut index = Index::open(dir.join("kb"), None, IndexConfig::default()).expect("open");
    write(dir, "good.md", GUIDE);
    write(dir, "data.jsonl", DATA);
    write(dir, ".hidden.md", "never seen");
    write(dir, "sub/readme.txt", BATTERY);
    std::os::unix::fs::symlink(dir.join("sub"), dir.join("sub/loop")).expect("symlink loop");
    std::os::unix::fs::symlink(dir.join("missing.md"), dir.join("dangling.md")).expect("symlink");
    let fifo = std::process::Command::new("mkfifo")
        .arg(dir.join("pipe.txt"))
        .status()
        .expect("mkfifo (coreutils) is needed for this test");
    assert!(fifo.success());
    let r = index.sync(dir).run().expect("sync");
    assert_eq!(r.added, ["data.jsonl", "good.md", "sub/readme.txt"]);
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    let mut skipped = names(&r.skipped);
    skipped.sort();
    assert_eq!(
        skipped,
        ["dangling.md", "loop", "pipe.txt"],
        "{:?}",
        r.skipped
    );
    let reason = |n: &str| {
        r.skipped
            .iter()
            .find(|s| s.path.ends_with(n))
            .map(|s| s.reason.clone())
            .unwrap_or_default()
    };
    assert!(reason("loop").contains("loop"), "{}", reason("loop"));
    assert!(reason("pipe.txt").contains("not a regular file"));

    // A JSONL file broken on its second line fails with its path and line; its earlier
    // documents stay, and the other changes go through.
    write(
        dir,
        "data.jsonl",
        "{\"id\": \"t1\", \"text\": \"ok\"}\n{\"id\": \"t2\", \"text\": \n",
    );
    write(
        dir,
        "good.md",
        "# Zephyr guide\n\nNow with a barometer too.\n",
    );
    let r = index.sync(dir).run().expect("sync");
    assert_eq!(r.replaced, ["good.md"]);
    assert_eq!(names(&r.failed), ["data.jsonl"]);
    assert!(
        r.failed[0].reason.contains("data.jsonl:2"),
        "{}",
        r.failed[0].reason
    );
    assert!(r.deleted.is_empty());
    assert_eq!(bm25_ids(&index, "sourdough starter"), ["data.jsonl#t2"]);
    assert_eq!(bm25_ids(&index, "barometer"), ["good.md"]);

    // Fixed: the next sync takes it.
    write(
        dir,
        "data.jsonl",
        "{\"id\": \"t1\", \"text\": \"Tides follow the moon.\"}\n",
    );
    let r = index.sync(dir).run().expect("sync");
    assert_eq!(r.replaced, ["data.jsonl"]);
    assert!(bm25_ids(&index, "sourdough starter").is_empty());
    assert_eq!(index.document_count(), 3);

    // Not a folder: a typed error naming it.
    let err = index.sync(dir.join("good.md")).run().unwrap_err();
    assert!(err.to_string().contains("good.md"), "{err}");
}

/// An embedder that fails once `fail_after` batches have been embedded (an ingest killed
/// half-way), with the real model's id so the index reopens with the real one.
struct Flaky {
    real: Arc<dyn Embedder>,
    calls: AtomicUsize,
    fail_after: usize,
}

impl TokenCounter for Flaky {
    fn token_spans(&self, text: &str) -> Vec<(usize, usize)> {
        self.real.token_spans(text)
    }
}

impl Embedder for Flaky {
    fn model_id(&self) -> &str {
        self.real.model_id()
    }
    fn dim(&self) -> usize {
        self.real.dim()
    }
    fn max_text_tokens(&self) -> Option<usize> {
        self.real.max_text_tokens()
    }
    fn embed(&self, texts: &[&str]) -> tribute_index::Result<Vec<Vec<f32>>> {
        if self.calls.fetch_add(1, Ordering::SeqCst) >= self.fail_after {
            return Err(tribute_index::Error::Embedding("killed".into()));
        }
        self.real.embed(texts)
    }
}

/// A sync that stops half-way leaves whole commits; the next sync finishes the job.
#[test]
fn an_interrupted_sync_is_finished_by_the_next() {
    let kb = tempfile::tempdir().expect("tempdir");
    let folder = tempfile::tempdir().expect("tempdir");
    let dir = folder.path();
    for i in 0..5 {
        write(
            dir,
            &format!("doc{i}.txt"),
            &format!("Document number {i} talks about topic{i}."),
        );
    }
    // One document per commit, and embedding dies on the third.
    let config = IndexConfig {
        commit_every: 1,
        ..IndexConfig::default()
    };
    {
        let flaky: Arc<dyn Embedder> = Arc::new(Flaky {
            real: embedder(),
            calls: AtomicUsize::new(0),
            fail_after: 2,
        });
        let mut index = Index::open(kb.path(), Some(flaky), config.clone()).expect("open");
        let err = index.sync(dir).run().unwrap_err();
        assert!(err.to_string().contains("killed"), "{err}");
    }
    let mut index = Index::open(kb.path(), Some(embedder()), config).expect("reopens");
    index.verify().expect("consistent after the interruption");
    assert_eq!((index.document_count(), index.chunk_count()), (2, 2));
    let r = index.sync(dir).run().expect("finishes");
    assert_eq!(r.added, ["doc2.txt", "doc3.txt", "doc4.txt"]);
    assert_eq!(r.unchanged, 2);
    assert_eq!((index.document_count(), index.chunk_count()), (5, 5));
    index.verify().expect("consistent");
}

/// Watch mode: a file written while watching is searchable within a few seconds; a
/// change replaces it, a delete removes it; the watch stops when asked.
#[test]
fn watch_keeps_the_index_in_sync() {
    let kb = tempfile::tempdir().expect("tempdir");
    let folder = tempfile::tempdir().expect("tempdir");
    let dir = folder.path().to_owned();
    write(&dir, "first.md", GUIDE);
    let index = Index::open(kb.path(), None, IndexConfig::default()).expect("open");
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<(SyncReport, Vec<String>)>();
    let watcher = {
        let (stop, dir) = (stop.clone(), dir.clone());
        std::thread::spawn(move || {
            let mut index = index;
            index
                .sync(&dir)
                .debounce(Duration::from_millis(200))
                .watch(&stop, |index, report| {
                    let _ = tx.send((report.clone(), bm25_ids(index, "barometer altitude")));
                })
                .expect("watch");
            index
        })
    };
    // The next sync that changed something (a burst may be seen as two).
    let wait = |what: &str| loop {
        let (report, hits) = rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("no sync within 10 s after {what}"));
        if report.changed() {
            break (report, hits);
        }
    };
    let (first, _) = wait("start");
    assert_eq!(first.added, ["first.md"]);

    write(&dir, "second.md", "The barometer gives the altitude.\n");
    let (r, hits) = wait("a new file");
    assert_eq!(r.added, ["second.md"], "{r:?}");
    assert_eq!(hits, ["second.md"]);

    write(
        &dir,
        "second.md",
        "The barometer gives the altitude, and the lidar the wind.\n",
    );
    let (r, _) = wait("a change");
    assert_eq!(r.replaced, ["second.md"], "{r:?}");

    std::fs::remove_file(dir.join("second.md")).expect("rm");
    let (r, hits) = wait("a delete");
    assert_eq!(r.deleted, ["second.md"], "{r:?}");
    assert!(hits.is_empty());

    stop.store(true, Ordering::Relaxed);
    let index = watcher.join().expect("the watch thread ends");
    assert_eq!(index.document_count(), 1);
    index.verify().expect("consistent");
}
