//! What the integration tests share: the real models (loaded once per test binary) and the
//! public development key and ledger receipts are signed for.

use std::sync::{Arc, OnceLock};

use alloy_primitives::address;
use tribute::attribution::receipt::Ledger;
use tribute::index::Embedder;
use tribute::index::embedder::{EmbedderOptions, OnnxEmbedder, default_model_dir};
use tribute::inference::Generator;

/// Anvil's first development key (public; never for real funds).
pub const KEY0: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
/// The ledger receipts are signed for (anvil's chain id, the first contract it deploys).
pub const LEDGER: Ledger = Ledger {
    chain_id: 31_337,
    contract: address!("5FbDB2315678afecb367f032d93F642f64180aa3"),
};

/// SmolLM2-135M-Instruct, loaded once for every test of the binary.
pub fn generator() -> Arc<Generator> {
    static G: OnceLock<Arc<Generator>> = OnceLock::new();
    G.get_or_init(|| {
        let dir = tribute::inference::default_model_dir();
        Arc::new(Generator::load(&dir).unwrap_or_else(|e| {
            panic!(
                "SmolLM2 is required at {}; run scripts/setup.sh ({e})",
                dir.display()
            )
        }))
    })
    .clone()
}

/// all-MiniLM-L6-v2, loaded once for every test of the binary.
pub fn embedder() -> Arc<dyn Embedder> {
    static E: OnceLock<Arc<dyn Embedder>> = OnceLock::new();
    E.get_or_init(|| {
        Arc::new(
            OnnxEmbedder::from_dir(&default_model_dir(), EmbedderOptions::default())
                .expect("MiniLM is required; run scripts/setup.sh"),
        )
    })
    .clone()
}
