//! The integration tests of `tribute-attribution`, in one binary: receipts, the journal,
//! the journal backends (directory and, feature `postgres`, a shared Postgres journal),
//! reward splits and (feature `onchain`, against a local anvil) on-chain settlement.

#[cfg(feature = "onchain")]
mod chain;
mod journal;
mod journal_backends;
mod provenance;
mod receipt;
mod split;

use alloy_primitives::{Address, address};
use tribute_attribution::receipt::Ledger;

/// Anvil's first development key (public knowledge; never use it for real funds).
const KEY0: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
/// The address of [`KEY0`].
const ADDR0: Address = address!("f39Fd6e51aad88F6F4ce6aB8827279cffFb92266");

/// The ledger the golden receipts are signed for: anvil's chain and its first deployment.
fn ledger() -> Ledger {
    Ledger {
        chain_id: 31337,
        contract: address!("5FbDB2315678afecb367f032d93F642f64180aa3"),
    }
}
