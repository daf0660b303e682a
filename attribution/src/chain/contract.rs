//! The `TributeLedger` contract binding, generated from its compiled ABI and bytecode.

use crate::receipt::UsageReceipt;

alloy::sol!(
    #[allow(missing_docs)]
    #[sol(rpc)]
    #[derive(Debug)]
    TributeLedger,
    "contracts/artifacts/TributeLedger.json"
);

/// The contract binding's copy of a receipt.
pub(super) fn to_contract_receipt(r: &UsageReceipt) -> TributeLedger::UsageReceipt {
    TributeLedger::UsageReceipt {
        version: r.version,
        receiptId: r.receiptId,
        payer: r.payer,
        servingNode: r.servingNode,
        modelId: r.modelId,
        adapters: r
            .adapters
            .iter()
            .map(|a| TributeLedger::AdapterUse {
                adapterId: a.adapterId,
                weightMicros: a.weightMicros,
            })
            .collect(),
        queryHash: r.queryHash,
        answerHash: r.answerHash,
        chunks: r
            .chunks
            .iter()
            .map(|c| TributeLedger::CitedChunk {
                contentHash: c.contentHash,
                contributor: c.contributor,
                weightBps: c.weightBps,
            })
            .collect(),
        fee: r.fee,
        nonce: r.nonce,
        timestamp: r.timestamp,
    }
}
