//! `tribute serve --config FILE [--listen ADDR]`: the engine as an OpenAI-compatible HTTP
//! API with citations and receipts (the `tribute-server` crate; see docs/SERVE.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use tribute::Engine;
use tribute_server::ServerOptions;

/// `tribute serve`: serve the engine over HTTP.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// The engine's TOML config (knowledge base, models, adapters, receipts).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
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
}

/// Loads the engine, then serves until Ctrl-C or SIGTERM, letting requests in flight finish.
pub fn run(a: ServeArgs) -> anyhow::Result<()> {
    let engine = Engine::from_config_file(&a.config)
        .with_context(|| format!("loading the engine from {}", a.config.display()))?;
    let size = engine.index_size()?;
    let options = ServerOptions {
        max_body_bytes: a.max_body_bytes,
        max_concurrent_asks: a.max_concurrent.max(1),
        max_queued_asks: a.max_queue,
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
            "tribute serve: listening on http://{addr} (model {}, {} documents, {} chunks; receipts {})",
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
