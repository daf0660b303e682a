//! `tribute serve --config FILE [--listen ADDR] [--keys FILE]`: the engine as an
//! OpenAI-compatible HTTP API with citations and receipts (the `tribute-server` crate; see
//! docs/SERVE.md), and `tribute serve keys …`: make and list its API keys.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use tribute::Engine;
use tribute_server::{ApiKey, ApiKeys, KeyEntry, KeysFile, ServerOptions};

/// `tribute serve`: serve the engine over HTTP.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServeArgs {
    /// Manage API keys instead of serving.
    #[command(subcommand)]
    pub command: Option<ServeCommand>,
    /// The engine's TOML config (knowledge base, models, adapters, receipts).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The API keys file (`tribute serve keys add`); without it the server is open, which
    /// is allowed on a loopback address only.
    #[arg(long, value_name = "FILE", env = "TRIBUTE_SERVE_KEYS")]
    pub keys: Option<PathBuf>,
    /// Serve without API keys on a non-loopback address (behind a proxy that authenticates).
    #[arg(long)]
    pub allow_open: bool,
    /// The address to listen on (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = ServerOptions::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Chat completions running at once.
    #[arg(long, default_value_t = ServerOptions::default().max_concurrent_asks)]
    pub max_concurrent: usize,
    /// Chat completions waiting for a place; beyond, requests get 429.
    #[arg(long, default_value_t = ServerOptions::default().max_queued_asks)]
    pub max_queue: usize,
    /// Most chunks one request may ask for (`top_k`).
    #[arg(long, default_value_t = ServerOptions::default().max_top_k)]
    pub max_top_k: usize,
    /// Export the tracing spans (each request, ask and stage: retrieve, prompt, prefill,
    /// decode, attribute, sign) over OpenTelemetry OTLP/HTTP to this traces URL; `--otlp`
    /// alone: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_ENDPOINT` or
    /// http://localhost:4318/v1/traces. `TRIBUTE_OTEL_LOG` filters them (default `info`).
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "")]
    pub otlp: Option<String>,
}

/// `tribute serve keys …`.
#[derive(clap::Subcommand, Debug)]
pub enum ServeCommand {
    /// Make, list and remove API keys (the keys file holds their SHA-256 only).
    #[command(subcommand)]
    Keys(KeysCommand),
}

/// `tribute serve keys …`.
#[derive(clap::Subcommand, Debug)]
pub enum KeysCommand {
    /// Make a new key, print it once (stdout) and add its hash to the keys file.
    Add {
        /// The keys file (created if missing).
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        /// A name for the key (shown in logs; unique in the file).
        #[arg(long)]
        name: String,
        /// A datanet the key may read (repeat for several); none: every datanet.
        #[arg(long = "datanet", value_name = "DATANET")]
        datanets: Vec<String>,
        /// May add documents (`POST /v1/documents`).
        #[arg(long)]
        ingest: bool,
        /// May settle receipts on chain (`POST /v1/receipts/settle`).
        #[arg(long)]
        settle: bool,
        /// May see the journal's receipts and the metrics.
        #[arg(long)]
        receipts: bool,
    },
    /// List the keys (names and scopes; the keys themselves are not stored).
    List {
        /// The keys file.
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
    /// Remove a key by name.
    Remove {
        /// The keys file.
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        /// The key's name.
        #[arg(long)]
        name: String,
    },
    /// Print the SHA-256 of a key read from stdin, for a keys file written by hand.
    Hash,
}

/// Loads the engine, then serves until Ctrl-C or SIGTERM, letting requests in flight finish.
pub fn run(a: ServeArgs) -> anyhow::Result<()> {
    if let Some(ServeCommand::Keys(command)) = a.command {
        return keys(command);
    }
    let config = a
        .config
        .context("--config FILE is required (the engine's TOML config)")?;
    let keys = match &a.keys {
        Some(path) => ApiKeys::from_file(path)?,
        None => ApiKeys::open(),
    };
    if keys.is_open() && !a.listen.ip().is_loopback() {
        // Refused before the models load (the server would refuse it too).
        anyhow::ensure!(
            a.allow_open,
            tribute_server::Error::OpenOnPublicAddress(a.listen)
        );
        eprintln!(
            "tribute serve: WARNING: no API keys on {}, a non-loopback address: anyone who can \
             reach it may ask, read every datanet and see every receipt",
            a.listen
        );
    }
    let engine = Engine::from_config_file(&config)
        .with_context(|| format!("loading the engine from {}", config.display()))?;
    let size = engine.index_size()?;
    let access = match &a.keys {
        Some(path) => format!("{} API keys from {}", keys.len(), path.display()),
        None => "open: no API keys".to_owned(),
    };
    let options = ServerOptions {
        max_body_bytes: a.max_body_bytes,
        max_concurrent_asks: a.max_concurrent.max(1),
        max_queued_asks: a.max_queue,
        max_top_k: a.max_top_k.max(1),
        keys,
        allow_open: a.allow_open,
        ..ServerOptions::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("listening on {}", a.listen))?;
        let addr = listener.local_addr()?;
        // Tests and scripts read this line for the port.
        eprintln!(
            "tribute serve: listening on http://{addr} (model {}, {} documents, {} chunks; receipts {}; {access})",
            engine.model().name,
            size.documents,
            size.chunks,
            match engine.payer() {
                Some(payer) if engine.config().receipts.ledger.is_some() =>
                    format!("signed by {payer}"),
                _ => "off: no payer key or ledger".to_owned(),
            }
        );
        tribute_server::serve(listener, engine, options, shutdown_signal())
            .await
            .context("serving HTTP")
    })?;
    runtime.shutdown_timeout(Duration::from_secs(5));
    Ok(())
}

/// `tribute serve keys …`.
fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Add {
            file,
            name,
            datanets,
            ingest,
            settle,
            receipts,
        } => {
            let mut keys = KeysFile::read(&file)?;
            anyhow::ensure!(
                !keys.keys.iter().any(|k| k.name == name),
                "{} already has a key named {name:?}",
                file.display()
            );
            let key = ApiKey::generate()?;
            keys.keys.push(KeyEntry {
                name: name.clone(),
                sha256: key.sha256(),
                datanets,
                ingest,
                settle,
                receipts,
            });
            // Checked as the server will read it before anything is written.
            ApiKeys::from_entries(&keys.keys)?;
            keys.write(&file)?;
            println!("{}", key.reveal());
            eprintln!(
                "tribute serve keys: added {name:?} to {}; the key above is shown once: send it \
                 as `Authorization: Bearer KEY`",
                file.display()
            );
        }
        KeysCommand::List { file } => {
            for k in KeysFile::read(&file)?.keys {
                let datanets = if k.datanets.is_empty() {
                    "all datanets".to_owned()
                } else {
                    k.datanets.join(",")
                };
                let mut scopes = vec![format!("read {datanets}")];
                for (on, what) in [
                    (k.ingest, "ingest"),
                    (k.settle, "settle"),
                    (k.receipts, "receipts"),
                ] {
                    if on {
                        scopes.push(what.to_owned());
                    }
                }
                println!("{}\t{}\t{}", k.name, scopes.join("; "), &k.sha256);
            }
        }
        KeysCommand::Remove { file, name } => {
            let mut keys = KeysFile::read(&file)?;
            let before = keys.keys.len();
            keys.keys.retain(|k| k.name != name);
            anyhow::ensure!(
                keys.keys.len() < before,
                "{} has no key named {name:?}",
                file.display()
            );
            keys.write(&file)?;
            eprintln!(
                "tribute serve keys: removed {name:?} from {}",
                file.display()
            );
        }
        KeysCommand::Hash => {
            let mut key = String::new();
            std::io::stdin()
                .read_line(&mut key)
                .context("reading the key from stdin")?;
            println!("{}", tribute_server::hash_key(key.trim()));
        }
    }
    Ok(())
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    eprintln!("tribute serve: shutting down after the requests in flight");
}
