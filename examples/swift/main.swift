// Tribute from Swift: ingest the sample datanet (two contributors), ask a question, print
// the cited answer, each citation's weight and contributor, and the signed receipt.
//
//   cd examples/swift && swift run -Xlinker -L../../bindings/swift/lib Quickstart ../..
// (bindings/swift/test.sh builds the library and runs this where Swift is installed.)

import Foundation
import Tribute

let arguments = CommandLine.arguments
let repo = URL(fileURLWithPath: arguments.count > 1 ? arguments[1] : "../..")
let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tribute-quickstart-\(UUID().uuidString)")
try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)

// 1. Ingest: a knowledge base in a directory, documents from JSONL files.
let kb = try Index.open(path: dir.appendingPathComponent("kb").path)
let report = try kb.addFiles(paths: [repo.appendingPathComponent("examples/data/zephyr").path])
print("ingested \(report.added) documents (\(report.chunks) chunks)")

// 2. An engine over it: the default SmolLM2 and MiniLM, receipts signed for a ledger.
//    A throw-away key here; an app would use Signer.fromKeystore(...) or the Keychain.
let engine = try Engine(
    index: kb,
    options: EngineOptions(
        ledger: Ledger(chainId: 31337, contract: "0x5FbDB2315678afecb367f032d93F642f64180aa3"),
        journal: dir.appendingPathComponent("receipts").path,
        maxTokens: 64
    ),
    signer: Signer.random()
)

// 3. Ask (blocking; use `try await engine.askAsync(...)` from a Task in an app).
let answer = try engine.ask(
    question: "How many times per second does the Zephyr flight controller correct the attitude?",
    options: AskOptions(topK: 3)
)
print(answer.citedText)
for c in answer.citations {
    print("  [\(c.marker)] \(String(format: "%5.1f", Double(c.weightBps) / 100))%  \(c.contributor)  \(c.title) (\(c.datanet))")
}
if let receipt = answer.receipt {
    print("receipt \(receipt.id()): \(receipt.feeWei()) wei, signed by \(try receipt.verify())")
} else {
    print("no receipt: \(answer.noReceipt ?? "")")
}
engine.release()
try? FileManager.default.removeItem(at: dir)
