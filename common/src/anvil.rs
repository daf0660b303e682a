//! A throwaway local anvil (feature `anvil`), for the tests and benchmarks that settle on a
//! real node: the binary `npm ci` installs in `attribution/contracts`, on a free port of
//! 127.0.0.1, killed when dropped.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The anvil binary: the platform binary that `npm ci` in `attribution/contracts` installs
/// (`node_modules/@foundry-rs/anvil-<platform>/bin/anvil`; not the `node_modules/.bin`
/// node shim, whose child would outlive a killed shim), else `anvil` on `PATH`.
pub fn anvil_binary() -> Option<PathBuf> {
    let foundry = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../attribution/contracts/node_modules/@foundry-rs");
    let platform = std::fs::read_dir(&foundry)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("anvil-"))
        .map(|e| e.path().join("bin/anvil"))
        .find(|bin| bin.is_file());
    platform.or_else(|| {
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|d| d.join("anvil"))
            .find(|p| p.is_file())
    })
}

/// A running anvil, killed (and reaped) when dropped.
#[derive(Debug)]
pub struct LocalAnvil {
    child: Child,
    port: u16,
}

impl LocalAnvil {
    /// Starts anvil with `args` on a free port and waits (up to 30 s) until it listens.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotFound`] without an anvil binary (run `npm ci` in
    /// `attribution/contracts`), the spawn's error, or [`io::ErrorKind::TimedOut`] when it
    /// exits or does not listen in time.
    pub fn start(args: &[&str]) -> io::Result<LocalAnvil> {
        let bin = anvil_binary().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "anvil not found: run `cd attribution/contracts && npm ci` or put foundry's anvil on PATH",
            )
        })?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(bin)
            .args(["--port", &port.to_string()])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        // Dropped on an early return: the child is killed.
        let mut anvil = LocalAnvil { child, port };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = anvil.child.try_wait()? {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("anvil exited before listening on port {port}: {status}"),
                ));
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("anvil did not listen on port {port} within 30 s"),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(anvil)
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its JSON-RPC URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for LocalAnvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
