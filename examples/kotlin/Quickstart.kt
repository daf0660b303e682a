// Tribute from Kotlin: ingest the sample datanet (two contributors), ask a question, print
// the cited answer, each citation's weight and contributor, and the signed receipt.
//
// bindings/kotlin/test.sh compiles and runs it:
//   java -Djna.library.path=<dir of libtribute_ffi.so> -cp … QuickstartKt <repository root>
// docs/MOBILE.md shows the same calls in an Android app.

import java.io.File
import kotlin.io.path.createTempDirectory
import tribute.AskOptions
import tribute.Engine
import tribute.EngineOptions
import tribute.Index
import tribute.Ledger
import tribute.Signer

fun main(args: Array<String>) {
    val repo = File(args.getOrElse(0) { "." })
    val dir = createTempDirectory("tribute-quickstart").toFile()

    // 1. Ingest: a knowledge base in a directory, documents from JSONL files.
    val kb = Index.open(File(dir, "kb").path)
    val report = kb.addFiles(listOf(File(repo, "examples/data/zephyr").path))
    println("ingested ${report.added} documents (${report.chunks} chunks)")

    // 2. An engine over it: the default SmolLM2 and MiniLM, receipts signed for a ledger.
    //    A throw-away key here; an app would use Signer.fromEnv() or Signer.fromKeystore().
    val engine = Engine(
        index = kb,
        options = EngineOptions(
            ledger = Ledger(chainId = 31337uL, contract = "0x5FbDB2315678afecb367f032d93F642f64180aa3"),
            journal = File(dir, "receipts").path,
            maxTokens = 64u,
        ),
        signer = Signer.random(),
    )

    // 3. Ask (blocking; use askAsync from a coroutine on Android).
    val answer = engine.ask("How many times per second does the Zephyr flight controller correct the attitude?", AskOptions(topK = 3u))
    println(answer.citedText)
    for (c in answer.citations) {
        println("  [${c.marker}] %5.1f%%  %s  %s (%s)".format(c.weightBps.toDouble() / 100, c.contributor, c.title, c.datanet))
    }
    val receipt = answer.receipt
    if (receipt != null) {
        println("receipt ${receipt.id()}: ${receipt.feeWei()} wei, signed by ${receipt.verify()}")
    } else {
        println("no receipt: ${answer.noReceipt}")
    }

    engine.release()
    dir.deleteRecursively()
}
