//! Pulling models from a local mirror with the hub's layout (feature `hub`), served from
//! 127.0.0.1 by a small HTTP server that answers what hf-hub asks: the repository listing
//! (`/api/models/ORG/NAME/revision/REV?blobs=true`) and file downloads
//! (`/ORG/NAME/resolve/REV/FILE`, with `Range`, `ETag`, `X-Repo-Commit` and
//! `Content-Range`). The fast tests export with a stand-in exporter; one test pulls the
//! real SmolLM2 GGUF and exports it with the real one.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha1::Sha1;
use sha2::{Digest, Sha256};
use tribute::Error;
use tribute::hub::{ModelSpec, PullError, PulledModel, Verification};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// A hub mirror: `ROOT/ORG/NAME/resolve/COMMIT/FILE`, and `ROOT/ORG/NAME/refs/BRANCH`
/// holding a branch's commit.
struct Mirror {
    url: String,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// `PATH RANGE` of every request.
    requests: Vec<String>,
    /// Files served with one byte flipped.
    corrupt: HashSet<String>,
    /// Files whose next download stops half way.
    cut_once: HashSet<String>,
    /// (sha256, git blob id) by path.
    hashes: HashMap<PathBuf, (String, String)>,
}

impl Mirror {
    fn serve(root: &Path) -> Mirror {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let state = Arc::new(Mutex::new(State::default()));
        let (root, shared) = (root.to_owned(), state.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = answer(stream, &root, &shared);
            }
        });
        Mirror { url, state }
    }

    fn requests(&self) -> Vec<String> {
        self.state.lock().expect("state").requests.clone()
    }
}

fn answer(mut stream: TcpStream, root: &Path, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let mut range = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':')
            && k.eq_ignore_ascii_case("range")
        {
            range = v.trim().strip_prefix("bytes=").map(str::to_owned);
        }
    }
    state
        .lock()
        .expect("state")
        .requests
        .push(format!("{target} {}", range.clone().unwrap_or_default()));
    let path = target.split('?').next().unwrap_or("").replace("%2F", "/");
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let Some((repo, rev)) = rest.split_once("/revision/") else {
            return respond(&mut stream, "404 Not Found", &[], b"{}");
        };
        let Some(commit) = resolve(root, repo, rev) else {
            return respond(
                &mut stream,
                "404 Not Found",
                &[],
                b"{\"error\":\"Revision Not Found\"}",
            );
        };
        let dir = root.join(repo).join("resolve").join(&commit);
        let mut siblings = Vec::new();
        for name in list(&dir, "") {
            let (sha256, git) = hashes(state, &dir.join(&name));
            let size = std::fs::metadata(dir.join(&name))?.len();
            let mut s = serde_json::json!({"rfilename": name, "size": size, "blobId": git});
            if is_lfs(&name) {
                s["lfs"] = serde_json::json!({"sha256": sha256, "size": size, "pointerSize": 134});
            }
            siblings.push(s);
        }
        let body = serde_json::json!({"id": repo, "sha": commit, "siblings": siblings});
        return respond(&mut stream, "200 OK", &[], body.to_string().as_bytes());
    }
    // /ORG/NAME/resolve/REV/FILE
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    let [org, name, "resolve", rev, file] = parts.as_slice() else {
        return respond(&mut stream, "404 Not Found", &[], b"");
    };
    let repo = format!("{org}/{name}");
    let Some(commit) = resolve(root, &repo, rev) else {
        return respond(&mut stream, "404 Not Found", &[], b"");
    };
    let file_path = root.join(&repo).join("resolve").join(&commit).join(file);
    let Ok(mut data) = std::fs::read(&file_path) else {
        return respond(&mut stream, "404 Not Found", &[], b"");
    };
    let (sha256, git) = hashes(state, &file_path);
    let etag = format!("\"{}\"", if is_lfs(file) { sha256 } else { git });
    let size = data.len();
    let start: usize = range
        .as_deref()
        .and_then(|r| r.split('-').next()?.parse().ok())
        .unwrap_or(0);
    let end = match range.as_deref().and_then(|r| r.split_once('-')) {
        Some((_, e)) if !e.is_empty() => e.parse::<usize>().unwrap_or(size - 1).min(size - 1),
        _ => size - 1,
    };
    let mut cut = false;
    {
        let mut s = state.lock().expect("state");
        if s.corrupt.contains(*file) {
            data[size / 2] ^= 0xff;
        }
        // Only a real download is cut, not hf-hub's `bytes=0-0` metadata probe.
        if end + 1 == size && s.cut_once.remove(*file) {
            cut = true;
        }
    }
    let body = &data[start.min(size)..=end];
    let headers = [
        ("ETag", etag),
        ("X-Repo-Commit", commit),
        ("Accept-Ranges", "bytes".into()),
        ("Content-Range", format!("bytes {start}-{end}/{size}")),
    ];
    let status = if range.is_some() {
        "206 Partial Content"
    } else {
        "200 OK"
    };
    if cut {
        let head = head(status, &headers, body.len());
        stream.write_all(head.as_bytes())?;
        stream.write_all(&body[..body.len() / 2])?;
        stream.flush()?;
        return stream.shutdown(std::net::Shutdown::Both);
    }
    respond(&mut stream, status, &headers, body)
}

fn head(status: &str, headers: &[(&str, String)], len: usize) -> String {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head + "\r\n"
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    stream.write_all(head(status, headers, body.len()).as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

/// A revision's commit: a commit directory, or a branch's ref file.
fn resolve(root: &Path, repo: &str, rev: &str) -> Option<String> {
    let repo_dir = root.join(repo);
    if rev.len() == 40 && repo_dir.join("resolve").join(rev).is_dir() {
        return Some(rev.to_owned());
    }
    let commit = std::fs::read_to_string(repo_dir.join("refs").join(rev)).ok()?;
    Some(commit.trim().to_owned())
}

fn is_lfs(name: &str) -> bool {
    name.ends_with(".safetensors") || name.ends_with(".gguf")
}

fn list(dir: &Path, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = format!("{prefix}{}", e.file_name().to_string_lossy());
        if e.path().is_dir() {
            out.extend(list(&e.path(), &format!("{name}/")));
        } else {
            out.push(name);
        }
    }
    out.sort();
    out
}

fn hashes(state: &Mutex<State>, path: &Path) -> (String, String) {
    if let Some(h) = state.lock().expect("state").hashes.get(path) {
        return h.clone();
    }
    let data = std::fs::read(path).unwrap_or_default();
    let sha256 = hex(&Sha256::digest(&data));
    let mut git = Sha1::new();
    git.update(format!("blob {}\0", data.len()).as_bytes());
    git.update(&data);
    let h = (sha256, hex(&git.finalize()));
    state
        .lock()
        .expect("state")
        .hashes
        .insert(path.to_owned(), h.clone());
    h
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A mirror holding `tiny/checkpoint` (branch `main` at [`COMMIT`]): a config, a tokenizer,
/// 256 KiB of "weights" and a README that is not downloaded.
fn tiny_mirror(root: &Path) -> Mirror {
    let repo = root.join("tiny/checkpoint");
    let dir = repo.join("resolve").join(COMMIT);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::create_dir_all(repo.join("refs")).expect("mkdir");
    std::fs::write(repo.join("refs/main"), COMMIT).expect("ref");
    std::fs::write(dir.join("config.json"), r#"{"model_type": "llama"}"#).expect("write");
    std::fs::write(dir.join("tokenizer.json"), "{}").expect("write");
    std::fs::write(dir.join("README.md"), "# tiny").expect("write");
    let weights: Vec<u8> = (0..256 * 1024u32)
        .map(|i| (i * 7 + i / 251) as u8)
        .collect();
    std::fs::write(dir.join("model.safetensors"), weights).expect("write");
    Mirror::serve(root)
}

/// A stand-in for `python -m tribute_export`: writes `OUT/tribute.json` and logs the
/// source to `exports.log` and its arguments to `args.log` beside itself.
fn fake_exporter(dir: &Path) -> PathBuf {
    let path = dir.join("fake-python");
    let script = r#"#!/bin/sh
echo "$*" >> "$(dirname "$0")/args.log"
while [ $# -gt 0 ]; do
  case "$1" in --source) src=$2; shift;; --out) out=$2; shift;; esac
  shift
done
echo "$src" >> "$(dirname "$0")/exports.log"
mkdir -p "$out" && echo '{}' > "$out/tribute.json"
"#;
    std::fs::write(&path, script).expect("write exporter");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    path
}

fn exports(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("exports.log"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn spec(s: &str) -> ModelSpec {
    s.parse().expect("spec")
}

struct Setup {
    _tmp: tempfile::TempDir,
    home: PathBuf,
    tools: PathBuf,
    mirror: Mirror,
    python: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path().join("home");
    let tools = tmp.path().join("tools");
    std::fs::create_dir_all(&tools).expect("mkdir");
    let python = fake_exporter(&tools);
    let mirror = tiny_mirror(&tmp.path().join("mirror"));
    Setup {
        _tmp: tmp,
        home,
        tools,
        mirror,
        python,
    }
}

impl Setup {
    fn pull(&self, s: &str) -> tribute::Result<PulledModel> {
        spec(s)
            .pull()
            .home(&self.home)
            .endpoint(&self.mirror.url)
            .python(&self.python)
            .run()
    }
}

#[test]
fn pull_verifies_exports_once_and_then_needs_no_network() {
    let s = setup();
    let m = s.pull("hf:tiny/checkpoint").expect("pull");
    assert!(!m.cached);
    assert_eq!(m.commit, COMMIT);
    assert_eq!(
        m.dir,
        s.home.join("models/hf/tiny--checkpoint").join(COMMIT)
    );
    assert!(m.dir.join("tribute.json").is_file() && m.dir.join("pull.json").is_file());
    let how: Vec<(&str, Verification)> = m
        .files
        .iter()
        .map(|f| (f.name.as_str(), f.verification))
        .collect();
    assert_eq!(
        how,
        [
            ("config.json", Verification::GitSha1),
            ("model.safetensors", Verification::Sha256),
            ("tokenizer.json", Verification::GitSha1),
        ]
    );
    assert_eq!(exports(&s.tools), 1);
    // The exporter read the snapshot directory in the download cache.
    let source = std::fs::read_to_string(s.tools.join("exports.log")).expect("log");
    assert!(
        source
            .trim()
            .ends_with(&format!("hub/models--tiny--checkpoint/snapshots/{COMMIT}"))
    );

    // Again, by branch and by commit: the cache, no request, no export.
    let seen = s.mirror.requests().len();
    for again in [
        "tiny/checkpoint",
        "tiny/checkpoint@main",
        &format!("tiny/checkpoint@{COMMIT}"),
    ] {
        let hit = s.pull(again).expect("cache hit");
        assert!(hit.cached, "{again}");
        assert_eq!((hit.dir.as_path(), hit.files.len()), (m.dir.as_path(), 3));
    }
    assert_eq!(s.mirror.requests().len(), seen);
    assert_eq!(exports(&s.tools), 1);

    // --refresh asks the hub, finds the same commit and reuses the export.
    let fresh = spec("tiny/checkpoint")
        .pull()
        .home(&s.home)
        .endpoint(&s.mirror.url)
        .python(&s.python)
        .refresh(true)
        .run()
        .expect("refresh");
    assert_eq!(fresh.dir, m.dir);
    assert!(s.mirror.requests().len() > seen);
    assert_eq!(exports(&s.tools), 1);
    // With the hub gone, refreshing falls back to the cached export.
    let offline = spec("tiny/checkpoint")
        .pull()
        .home(&s.home)
        .endpoint("http://127.0.0.1:9")
        .refresh(true)
        .run()
        .expect("offline refresh");
    assert!(offline.cached);
}

/// `:OPTIONS` reach the exporter, and each choice is an export of its own beside the plain
/// one, cached by branch and by commit like it.
#[test]
fn export_options_make_exports_of_their_own() {
    let s = setup();
    let q = s
        .pull("hf:tiny/checkpoint:int4,static")
        .expect("pull int4 static");
    let base = s.home.join("models/hf/tiny--checkpoint");
    assert_eq!(q.dir, base.join(format!("{COMMIT}--int4-static")));
    let args = std::fs::read_to_string(s.tools.join("args.log")).expect("args");
    assert!(
        args.contains("--dtype fp32 --quant int4 --ops static"),
        "{args}"
    );
    let plain = s.pull("tiny/checkpoint").expect("plain pull");
    assert!(!plain.cached, "the plain export is another one");
    assert_eq!(plain.dir, base.join(COMMIT));
    assert!(plain.dir.join("tribute.json").is_file() && q.dir.join("tribute.json").is_file());
    assert!(
        std::fs::read_to_string(s.tools.join("args.log"))
            .expect("args")
            .lines()
            .last()
            .is_some_and(|l| l.contains("--dtype fp32")
                && !l.contains("--quant")
                && !l.contains("--ops")),
        "no options for the plain spec"
    );
    assert_eq!(exports(&s.tools), 2);
    let seen = s.mirror.requests().len();
    for again in [
        "tiny/checkpoint:static,int4",
        "tiny/checkpoint@main:int4,static",
        &format!("tiny/checkpoint@{COMMIT}:int4,static"),
    ] {
        let hit = s.pull(again).expect("cache hit");
        assert!(hit.cached && hit.dir == q.dir, "{again}: {:?}", hit.dir);
    }
    let fp16 = s
        .pull("tiny/checkpoint:static,fp16")
        .expect("another choice");
    assert_eq!(fp16.dir, base.join(format!("{COMMIT}--static-fp16")));
    assert!(s.mirror.requests().len() > seen, "it resolved main again");
    assert_eq!(exports(&s.tools), 3, "downloaded once, exported per choice");
    let e = "tiny/checkpoint:int3"
        .parse::<ModelSpec>()
        .expect_err("unknown option");
    assert!(
        matches!(&e, Error::Pull(PullError::InvalidSpec { reason, .. }) if reason.contains("int3")),
        "{e}"
    );
}

#[test]
fn unknown_revisions_and_repositories_are_typed_errors() {
    let s = setup();
    match s.pull("tiny/checkpoint@no-such-branch") {
        Err(Error::Pull(PullError::RevisionNotFound { repo, revision, .. })) => {
            assert_eq!(
                (repo.as_str(), revision.as_str()),
                ("tiny/checkpoint", "no-such-branch")
            );
        }
        other => panic!("expected RevisionNotFound, got {other:?}"),
    }
    match s.pull("tiny/absent") {
        Err(Error::Pull(PullError::RepoNotFound { repo, .. })) => assert_eq!(repo, "tiny/absent"),
        other => panic!("expected RepoNotFound, got {other:?}"),
    }
    assert_eq!(exports(&s.tools), 0);
}

#[test]
fn offline_pulls_name_the_cache_and_use_files_copied_in() {
    let s = setup();
    let unreachable = |spec_text: &str| {
        spec(spec_text)
            .pull()
            .home(&s.home)
            .endpoint("http://127.0.0.1:9")
            .python(&s.python)
            .run()
    };
    let e = unreachable("tiny/checkpoint@main").unwrap_err();
    let snapshot = s.home.join("hub/models--tiny--checkpoint/snapshots/main");
    assert!(
        matches!(&e, Error::Pull(PullError::Offline { snapshot_dir, .. }) if *snapshot_dir == snapshot),
        "{e}"
    );
    assert!(
        e.to_string().contains(&snapshot.display().to_string()),
        "{e}"
    );

    // Copy the checkpoint in where the message says, and the pull exports it.
    std::fs::create_dir_all(&snapshot).expect("mkdir");
    let mirror_dir = s
        ._tmp
        .path()
        .join("mirror/tiny/checkpoint/resolve")
        .join(COMMIT);
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(mirror_dir.join(f), snapshot.join(f)).expect("copy");
    }
    let m = unreachable("tiny/checkpoint@main").expect("export of copied files");
    assert!(
        m.files
            .iter()
            .all(|f| f.verification == Verification::Unverified)
    );
    assert_eq!(m.dir, s.home.join("models/hf/tiny--checkpoint/main"));
    assert_eq!(exports(&s.tools), 1);
}

#[test]
fn a_corrupted_download_is_deleted_and_refused() {
    let s = setup();
    s.mirror
        .state
        .lock()
        .expect("state")
        .corrupt
        .insert("model.safetensors".into());
    match s.pull("tiny/checkpoint") {
        Err(Error::Pull(PullError::HashMismatch {
            file, algorithm, ..
        })) => {
            assert_eq!((file.as_str(), algorithm), ("model.safetensors", "sha256"));
        }
        other => panic!("expected HashMismatch, got {other:?}"),
    }
    assert_eq!(exports(&s.tools), 0);
    assert!(
        !s.home
            .join("models/hf/tiny--checkpoint")
            .join(COMMIT)
            .exists()
    );
    let snapshot = s
        .home
        .join("hub/models--tiny--checkpoint/snapshots")
        .join(COMMIT);
    assert!(
        !snapshot.join("model.safetensors").exists(),
        "the bad file is gone"
    );

    // Repaired upstream: the next pull downloads it afresh and succeeds.
    s.mirror.state.lock().expect("state").corrupt.clear();
    let m = s.pull("tiny/checkpoint").expect("pull after repair");
    assert_eq!(m.files.len(), 3);
    assert_eq!(exports(&s.tools), 1);
}

#[test]
fn an_interrupted_download_is_resumed_and_never_half_exported() {
    let s = setup();
    s.mirror
        .state
        .lock()
        .expect("state")
        .cut_once
        .insert("model.safetensors".into());
    match s.pull("tiny/checkpoint") {
        Err(Error::Pull(PullError::Download { file, .. })) => assert_eq!(file, "model.safetensors"),
        other => panic!("expected Download, got {other:?}"),
    }
    assert_eq!(exports(&s.tools), 0);
    let models = s.home.join("models/hf/tiny--checkpoint");
    assert!(!models.join(COMMIT).exists());

    let m = s.pull("tiny/checkpoint").expect("resumed pull");
    assert_eq!(exports(&s.tools), 1);
    assert!(
        m.files
            .iter()
            .any(|f| f.name == "model.safetensors" && f.verification == Verification::Sha256)
    );
    // The second download asked only for the bytes the first did not get.
    let half = 128 * 1024;
    let resumed = s
        .mirror
        .requests()
        .iter()
        .filter(|r| r.contains("model.safetensors"))
        .filter_map(|r| {
            r.rsplit(' ')
                .next()?
                .strip_suffix('-')?
                .parse::<usize>()
                .ok()
        })
        .any(|start| start >= half);
    assert!(
        resumed,
        "no resumed range request: {:?}",
        s.mirror.requests()
    );
}

#[test]
fn a_real_gguf_through_the_mirror_exports_and_generates() {
    let home = tribute::common::tribute_home();
    let gguf = home.join("gguf/SmolLM2-135M-Instruct.Q4_1.gguf");
    let python = home.join("venv/bin/python");
    assert!(
        gguf.is_file() && python.is_file(),
        "{} and {} are required; run scripts/setup.sh first",
        gguf.display(),
        python.display()
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = tmp
        .path()
        .join("mirror/tribute-test/SmolLM2-135M-Instruct-GGUF");
    let dir = repo.join("resolve").join(COMMIT);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::create_dir_all(repo.join("refs")).expect("mkdir");
    std::fs::write(repo.join("refs/main"), COMMIT).expect("ref");
    std::os::unix::fs::symlink(&gguf, dir.join("SmolLM2-135M-Instruct.Q4_1.gguf")).expect("link");
    std::fs::write(dir.join("README.md"), "GGUF").expect("write");
    let mirror = Mirror::serve(&tmp.path().join("mirror"));
    let pull = || {
        spec("hf:tribute-test/SmolLM2-135M-Instruct-GGUF@main")
            .pull()
            .home(tmp.path().join("home"))
            .endpoint(&mirror.url)
            .python(&python)
            .run()
    };
    let m = pull().expect("pull and export");
    assert_eq!(m.file.as_deref(), Some("SmolLM2-135M-Instruct.Q4_1.gguf"));
    assert_eq!(m.files[0].verification, Verification::Sha256);
    assert!(
        m.dir
            .ends_with(format!("{COMMIT}--SmolLM2-135M-Instruct.Q4_1"))
    );
    let again = pull().expect("cache hit");
    assert!(again.cached && again.dir == m.dir);

    // The export answers like the one `make setup` made from the same GGUF.
    let request = tribute::inference::GenerateRequest::new(tribute::inference::Prompt::from(
        "What is the capital of France?",
    ))
    .max_tokens(12);
    let pulled = tribute::Generator::load(&m.dir).expect("load the pulled model");
    let answer = pulled.generate(&request).expect("generate");
    assert!(answer.text.contains("Paris"), "{}", answer.text);
    let reference = tribute::Generator::load(tribute::inference::default_model_dir())
        .expect("load the setup model");
    assert_eq!(
        reference.generate(&request).expect("generate").tokens,
        answer.tokens
    );

    // `:int4,static`: the same GGUF as int4 weights in the static layout, an export of its
    // own, which generates what the exporter's own export with those options does.
    let q = spec("hf:tribute-test/SmolLM2-135M-Instruct-GGUF@main:int4,static")
        .pull()
        .home(tmp.path().join("home"))
        .endpoint(&mirror.url)
        .python(&python)
        .run()
        .expect("pull and export int4 static");
    assert!(
        q.dir
            .ends_with(format!("{COMMIT}--SmolLM2-135M-Instruct.Q4_1--int4-static"))
    );
    let direct = tmp.path().join("direct");
    let exported = std::process::Command::new(&python)
        .args(["-m", "tribute_export", "--source"])
        .arg(&gguf)
        .arg("--out")
        .arg(&direct)
        .args(["--dtype", "fp32", "--quant", "int4", "--ops", "static"])
        .output()
        .expect("run the exporter");
    assert!(exported.status.success(), "{exported:?}");
    let g = tribute::Generator::load(&q.dir).expect("load the int4 export");
    assert_eq!(g.config().ops, tribute::inference::GraphOps::Static);
    let written = std::fs::read_to_string(q.dir.join("tribute.json")).expect("tribute.json");
    assert!(
        written.contains("\"quantization\""),
        "int4 weights: {written}"
    );
    let want = tribute::Generator::load(&direct).expect("load the direct export");
    let answer = g.generate(&request).expect("generate");
    assert!(!answer.tokens.is_empty());
    assert_eq!(
        answer.tokens,
        want.generate(&request).expect("generate").tokens
    );
}
