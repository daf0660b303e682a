//! Scratch PostgreSQL databases for tests (feature `scratch-db`): each Postgres test works in
//! an empty database of its own on the server that `scripts/with-postgres.sh` starts.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Creates a new empty database `<prefix>_<pid>_<n>` on the server of `url` (which names a
/// database to connect to first) and returns its URL.
///
/// # Errors
///
/// The driver's error when the server is unreachable or refuses to create it.
pub fn fresh_database(url: &str, prefix: &str) -> Result<String, postgres::Error> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    client.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))?;
    client.batch_execute(&format!("CREATE DATABASE {name}"))?;
    let base = url.rsplit_once('/').map_or(url, |(base, _)| base);
    Ok(format!("{base}/{name}"))
}
