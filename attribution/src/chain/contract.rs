//! The `TributeLedger` contract binding, generated from its compiled ABI and bytecode.

use crate::receipt::UsageReceipt;

alloy::sol!(
    #[allow(missing_docs)]
    #[sol(rpc)]
    #[derive(Debug)]
    TributeLedger,
    "contracts/artifacts/TributeLedger.json"
);

/// The contract binding's copy of a version-2 receipt (`hashReceiptV2`).
pub(super) fn to_contract_receipt_v2(r: &UsageReceipt) -> TributeLedger::UsageReceiptV2 {
    let v1 = to_contract_receipt(r);
    TributeLedger::UsageReceiptV2 {
        version: v1.version,
        receiptId: v1.receiptId,
        payer: v1.payer,
        servingNode: v1.servingNode,
        modelId: v1.modelId,
        adapters: v1.adapters,
        queryHash: v1.queryHash,
        answerHash: v1.answerHash,
        chunks: v1.chunks,
        fee: v1.fee,
        nonce: v1.nonce,
        timestamp: v1.timestamp,
        attributionHash: r.attributionHash,
    }
}

/// The contract binding's copy of a version-1 receipt (`hashReceipt`).
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
