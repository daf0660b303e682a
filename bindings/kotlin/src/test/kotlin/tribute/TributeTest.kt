// The Kotlin/JVM suite of the Tribute bindings: the whole surface on the real models
// (MiniLM, SmolLM2-135M-Instruct, a PEFT LoRA adapter) and the repository's sample datanet
// (two contributors). Run by bindings/kotlin/test.sh; a plain main() harness with
// kotlin.test assertions, no test framework needed.
//
// System properties: tribute.repo (the repository root), tribute.target (the cargo target
// directory, for the debug `tribute` CLI). Environment: TRIBUTE_HOME (the models),
// TRIBUTE_LORA_DIR (the LoRA adapters; else examples/adapters), CI (set: a missing
// anvil or CLI fails the settle test instead of skipping it).

package tribute

import java.io.File
import java.io.IOException
import java.math.BigInteger
import java.net.ServerSocket
import java.net.Socket
import java.nio.file.Files
import java.util.concurrent.CountDownLatch
import java.util.concurrent.TimeUnit
import java.util.concurrent.atomic.AtomicInteger
import kotlin.system.exitProcess
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertNotNull
import kotlin.test.assertNull
import kotlin.test.assertTrue
import kotlin.test.fail
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.delay
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking

/** Anvil's first development key (public; never for real funds) and its address. */
const val KEY0 = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
const val PAYER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
const val ALICE = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
const val BOB = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"
val LEDGER = Ledger(chainId = 31337uL, contract = "0x5FbDB2315678afecb367f032d93F642f64180aa3")

// anvil's development accounts 3 and 5: the model owner and the treasury.
const val MODEL_OWNER = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
const val TREASURY = "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc"

const val PRICING_Q = "How much does a commercial Zephyr fleet license cost?"
const val GUST_Q = "At what gust speed should Zephyr pilots land?"

object Fixtures {
    val repo = File(System.getProperty("tribute.repo") ?: ".").absoluteFile
    val target: File = (System.getProperty("tribute.target") ?: System.getenv("CARGO_TARGET_DIR")?.takeIf { it.isNotEmpty() })
        ?.let(::File) ?: File(repo, "target")
    val sample = File(repo, "examples/data/zephyr")
    val home: File = System.getenv("TRIBUTE_HOME")?.takeIf { it.isNotEmpty() }?.let(::File)
        ?: System.getenv("XDG_CACHE_HOME")?.takeIf { it.isNotEmpty() }?.let { File(it, "tribute") }
        ?: File(System.getProperty("user.home"), ".cache/tribute")
    val lora: File = System.getenv("TRIBUTE_LORA_DIR")?.takeIf { it.isNotEmpty() }?.let(::File)
        ?: File(repo, "examples/adapters")
    val zephyr = File(lora, "smollm2-135m-zephyr-lora")
    val tmp: File = Files.createTempDirectory("tribute-kotlin").toFile()

    fun require(f: File, what: String) {
        if (!f.exists()) {
            System.err.println("FATAL: $what is required at $f; run `make setup` (scripts/setup.sh)")
            exitProcess(2)
        }
    }

    /** The one generator of the suite (loading SmolLM2 takes seconds). */
    val generator: Generator by lazy { Generator.load() }

    /** An index over the sample datanet in a fresh directory. */
    fun sampleIndex(name: String): Index {
        val kb = Index.open(File(tmp, name).path)
        val report = kb.addFiles(listOf(File(sample, "alice.jsonl").path, File(sample, "bob.jsonl").path))
        assertEquals(5u, report.added)
        return kb
    }

    /** One engine over the sample datanet, signing receipts with the anvil key. */
    val engine: Engine by lazy {
        Engine(
            index = sampleIndex("kb"),
            options = EngineOptions(ledger = LEDGER, journal = File(tmp, "receipts").path, maxTokens = 48u),
            generator = generator,
            signer = Signer.fromHex(KEY0),
        )
    }
}

fun checkCitations(answer: Answer) {
    assertTrue(answer.citations.isNotEmpty(), "no citations: ${answer.noReceipt}")
    assertEquals(10_000u, answer.citations.sumOf { it.weightBps })
    val weights = answer.citations.map { it.weightBps }
    assertEquals(weights.sortedDescending(), weights)
}

/** A listener collecting the pieces; `stopAfter` pieces it asks to stop. */
class Collector(private val stopAfter: Int = Int.MAX_VALUE) : AskListener {
    val pieces = mutableListOf<String>()
    var done: Answer? = null
    val threads = mutableSetOf<String>()

    override fun onText(text: String): Boolean {
        threads += Thread.currentThread().name
        pieces += text
        return pieces.size < stopAfter
    }

    override fun onDone(answer: Answer) {
        done = answer
    }
}

/** A listener collecting an ingest's progress. */
class ProgressCollector : IngestListener {
    val seen = mutableListOf<IngestProgress>()
    override fun onProgress(progress: IngestProgress) {
        seen += progress
    }
}

/** Thrown by a test whose prerequisite is missing outside CI: reported as skipped. */
class Skipped(reason: String) : Exception(reason)

/** A prerequisite the suite does not build: fails the test in CI (env CI set), else skips it. */
fun missing(what: String): Nothing {
    if (!System.getenv("CI").isNullOrEmpty()) fail("$what is required in CI")
    throw Skipped("$what not found (`make test` provides it)")
}

/**
 * A local chain: anvil (npm-installed in attribution/contracts) with the TributeLedger
 * deployed by the debug `tribute` CLI, SmolLM2 registered to [MODEL_OWNER] and 1 ether
 * deposited by the payer.
 */
class LocalChain(dir: File) : AutoCloseable {
    private val anvil: Process
    private val cli: File
    private val port: Int
    val rpc: String
    val ledger = File(dir, "ledger.json")

    init {
        val bin = File(Fixtures.repo, "attribution/contracts/node_modules/@foundry-rs").listFiles().orEmpty()
            .filter { it.name.startsWith("anvil-") }.map { File(it, "bin/anvil") }.sorted()
            .firstOrNull { it.isFile } ?: missing("anvil (cd attribution/contracts && npm ci)")
        cli = File(Fixtures.target, "debug/tribute").takeIf { it.isFile }
            ?: missing("the tribute CLI at ${Fixtures.target}/debug/tribute (cargo build -p tribute-cli)")
        dir.mkdirs()
        port = ServerSocket(0).use { it.localPort }
        rpc = "http://127.0.0.1:$port"
        anvil = ProcessBuilder(bin.path, "--port", "$port")
            .redirectOutput(ProcessBuilder.Redirect.DISCARD).redirectError(ProcessBuilder.Redirect.DISCARD).start()
        try {
            val deadline = System.nanoTime() + 30_000_000_000L
            while (true) {
                try {
                    Socket("127.0.0.1", port).close()
                    break
                } catch (e: IOException) {
                    if (!anvil.isAlive || System.nanoTime() > deadline) fail("anvil did not start on port $port")
                    Thread.sleep(50)
                }
            }
            run("chain", "deploy", "--rpc", rpc, "--out", ledger.path)
            chain("register-model", "SmolLM2-135M-Instruct", "--owner", MODEL_OWNER)
            chain("deposit", "1ether")
        } catch (e: Throwable) {
            close()
            throw e
        }
    }

    /** Runs the CLI with the payer's key in TRIBUTE_KEY; its stdout. */
    fun run(vararg args: String): String {
        val err = File.createTempFile("tribute-cli", ".err")
        try {
            val pb = ProcessBuilder(listOf(cli.path) + args).redirectError(err)
            pb.environment()["TRIBUTE_KEY"] = KEY0
            val p = pb.start()
            val out = p.inputStream.bufferedReader().readText()
            assertTrue(p.waitFor(120, TimeUnit.SECONDS), "tribute ${args.joinToString(" ")} timed out")
            assertEquals(0, p.exitValue(), "tribute ${args.joinToString(" ")} failed: ${err.readText()}")
            return out
        } finally {
            err.delete()
        }
    }

    /** `tribute chain …` against this chain and ledger. */
    fun chain(vararg args: String): String = run("chain", *args, "--rpc", rpc, "--ledger", ledger.path)

    /** The payees' withdrawable balances on the ledger, in wei. */
    fun balances(vararg addresses: String): Map<String, BigInteger> {
        val out = chain("balance", *addresses, "--json")
        val row = Regex("\"address\"\\s*:\\s*\"(0x[0-9a-fA-F]{40})\"[^}]*?\"balance\"\\s*:\\s*\"?([0-9]+)")
        val byAddress = row.findAll(out).associate { it.groupValues[1].lowercase() to BigInteger(it.groupValues[2]) }
        return addresses.associateWith { byAddress[it.lowercase()] ?: fail("no balance of $it in $out") }
    }

    /** Stops the chain (the node goes down). */
    fun stop() {
        anvil.destroyForcibly()
        anvil.waitFor(30, TimeUnit.SECONDS)
    }

    override fun close() = stop()
}

val tests = linkedMapOf<String, () -> Unit>()
fun test(name: String, body: () -> Unit) { tests[name] = body }

fun registerTests() {
    test("version") { assertTrue(version().isNotEmpty()) }

    test("index: add documents of two contributors, search, delete") {
        val kb = Index.open(File(Fixtures.tmp, "kb-docs").path)
        val report = kb.add(
            listOf(
                Document(id = "a1", text = "Zephyr drones correct their attitude forty times per second.", title = "Attitude"),
                Document(id = "b1", text = "A fleet license for Zephyr costs 900 euros per year.", contributor = BOB,
                    datanet = "pilot-notes", metadataJson = """{"lang": "en"}"""),
            ),
            datanet = "zephyr-docs",
            contributor = ALICE,
        )
        assertEquals(2u, report.added)
        assertTrue(report.chunks >= 2u)
        assertEquals(2u, kb.documentCount())
        val hits = kb.search("How much is a fleet license?", k = 2u)
        assertEquals("b1", hits[0].docId)
        assertEquals(BOB, hits[0].contributor)
        assertEquals("pilot-notes", hits[0].datanet)
        assertTrue(hits[0].contentHash.startsWith("0x") && hits[0].contentHash.length == 66)
        val a = kb.search("attitude corrections", k = 1u, datanets = listOf("zephyr-docs"))
        assertEquals(ALICE, a.single().contributor)
        val bm25 = kb.search("fleet license", k = 2u, mode = SearchMode.BM25)
        assertTrue(bm25.all { it.bm25Score != null && it.denseScore == null })
        // The same id with the same text is unchanged; deleting works once.
        assertEquals(1u, kb.add(listOf(Document(id = "a1", text = "Zephyr drones correct their attitude forty times per second.", title = "Attitude")), contributor = ALICE).unchanged)
        assertTrue(kb.delete("a1"))
        assertTrue(!kb.delete("a1"))
        kb.release()
        assertTrue(kb.isClosed())
        assertFailsWith<TributeException.KnowledgeBase> { kb.documentCount() }
    }

    test("index: a Markdown file's hits and citations carry locators") {
        val md = File(Fixtures.tmp, "notes.md")
        md.writeText("# Zéphyr notes\n\nZephyr keeps attributed documents.\n\n## Ingest\n\nDocuments are cut into chunks.\n\n" +
            "### Formats\n\nPDF, HTML, DOCX, Markdown and plain text are read.\n")
        val kb = Index.open(File(Fixtures.tmp, "kb-md").path)
        kb.addFiles(listOf(md.path))
        val hit = kb.search("PDF DOCX plain text", k = 1u, mode = SearchMode.BM25).single()
        // Characters, not bytes: "é" is one character (hit.start counts it as two bytes).
        val start = md.readText().indexOf("### Formats").toULong()
        val end = start + hit.text.length.toULong()
        assertEquals(Locator(listOf(), listOf("Zéphyr notes", "Ingest", "Formats"), start, end), hit.locator)
        assertEquals(start + 1u, hit.start)
        val engine = Engine(kb, EngineOptions(), generator = Fixtures.generator)
        val r = engine.retrieve("Which formats are read: PDF, HTML, DOCX?", k = 2u, sign = false)
        val cited = r.citations.first()
        assertNotNull(cited.locator)
        assertEquals(r.hits.first { it.chunkId == cited.chunkId }.locator, cited.locator)
        engine.release()
    }

    test("index: malformed documents are KnowledgeBase errors and nothing is ingested") {
        val kb = Index.open(File(Fixtures.tmp, "kb-bad").path)
        val e = assertFailsWith<TributeException.KnowledgeBase> {
            kb.add(listOf(Document(id = "ok", text = "fine"), Document(id = "bad", text = "x", contributor = "not-an-address")))
        }
        assertTrue(e.message!!.startsWith("document 1"), e.message)
        assertFailsWith<TributeException.KnowledgeBase> { kb.add(listOf(Document(id = "m", text = "x", metadataJson = "[1]"))) }
        assertFailsWith<TributeException.KnowledgeBase> { kb.add(listOf(Document(id = "e", text = ""))) }
        assertEquals(0u, kb.documentCount())
        kb.release()
    }

    test("index: an IngestListener sees the progress; its exception is reported after the ingest") {
        val kb = Index.open(File(Fixtures.tmp, "kb-progress").path)
        val progress = ProgressCollector()
        val report = kb.addFiles(
            listOf(File(Fixtures.sample, "alice.jsonl").path, File(Fixtures.sample, "bob.jsonl").path),
            listener = progress,
        )
        assertEquals(5u, report.added)
        val seen = progress.seen
        assertTrue(seen.size >= 2, "$seen")
        val last = seen.last()
        assertEquals(5u to 5u, last.docsDone to last.docsTotal)
        assertEquals(report.chunks, last.chunksTotal)
        assertEquals(last.chunksTotal, last.chunksDone)
        assertTrue(seen.zipWithNext().all { (a, b) -> a.docsDone <= b.docsDone && a.chunksDone <= b.chunksDone }, "$seen")
        // A throwing listener is not called again: the documents go in, then the error.
        val calls = AtomicInteger()
        val throwing = object : IngestListener {
            override fun onProgress(progress: IngestProgress) {
                calls.incrementAndGet()
                throw IllegalStateException("progress bug")
            }
        }
        println("      (a Rust panic message follows: expected)")
        val e = assertFailsWith<TributeException.Internal> {
            kb.add(
                listOf(
                    Document(id = "p1", text = "Progress reports come after each embedded batch."),
                    Document(id = "p2", text = "A failing listener does not stop the ingest."),
                ),
                listener = throwing,
            )
        }
        assertEquals("the ingest listener failed: java.lang.IllegalStateException: progress bug", e.message)
        assertEquals(1, calls.get())
        assertEquals(7u, kb.documentCount())
        kb.release()
    }

    test("generator: load, add a PEFT adapter, generate with it") {
        Fixtures.require(Fixtures.zephyr, "the zephyr LoRA adapter")
        val g = Fixtures.generator
        assertEquals("cpu", g.device())
        assertTrue(g.contextLength() >= 2048u)
        g.addAdapter("zephyr", Fixtures.zephyr.path)
        assertTrue("zephyr" in g.adapters())
        val with = g.generate("What is Zephyr SDK?", maxTokens = 24u, adapters = listOf(AdapterWeight("zephyr", 1.0f)))
        assertTrue(with.startsWith("Zephyr SDK is a Rust library"), with)
        val without = g.generate("What is Zephyr SDK?", maxTokens = 24u)
        assertTrue(!without.startsWith("Zephyr SDK is a Rust library"), without)
        assertFailsWith<TributeException.Adapter> { g.addAdapter("broken", Fixtures.sample.path) }
    }

    test("engine: ask cites the source and signs a verifiable receipt") {
        val engine = Fixtures.engine
        assertEquals(PAYER, engine.payer())
        assertEquals(LEDGER, engine.ledger())
        assertEquals("SmolLM2-135M-Instruct", engine.model())
        val answer = engine.ask(PRICING_Q, AskOptions(topK = 3u))
        assertTrue("900" in answer.text, answer.text)
        checkCitations(answer)
        val top = answer.citations[0]
        assertEquals(Triple("zephyr-pricing", BOB, "pilot-notes"), Triple(top.docId, top.contributor, top.datanet))
        assertTrue(top.weightBps > 5_000u)
        assertTrue("[${top.marker}]" in answer.citedText)
        assertEquals(PRICING_Q, answer.question)
        assertEquals(3u, answer.usage.sourcesUsed)
        assertEquals(AttributionMethod.LOO, answer.usage.method)
        assertTrue(answer.usage.promptTokens > 100u && answer.usage.answerTokens > 0u && answer.usage.totalMs > 0.0)
        for (s in answer.sentences) {
            assertEquals(s.text, answer.text.codePointsSlice(s.start.toInt(), s.end.toInt()))
        }
        assertTrue(answer.json.contains("\"citations\""))
        // Every datanet is at normal trust: the source guard raises nothing.
        assertNull(answer.sourceAlert)

        val receipt = assertNotNull(answer.receipt, answer.noReceipt)
        assertEquals(PAYER, receipt.verify())
        assertEquals(PAYER, receipt.verify(LEDGER))
        assertEquals(PAYER, receipt.payer())
        assertEquals("1000000000000000", receipt.feeWei())
        assertTrue(receipt.id().startsWith("0x") && receipt.id().length == 66)
        assertEquals(10_000u, receipt.chunks().sumOf { it.weightBps })
        assertTrue(receipt.chunks().map { it.contributor }.toSet().all { it == ALICE || it == BOB })
        // Verified against another ledger's domain, the signature recovers someone else.
        val e = assertFailsWith<TributeException.Receipt> { receipt.verify(Ledger(1uL, LEDGER.contract)) }
        assertTrue("not by its payer" in e.message!!, e.message)
        // The canonical JSON round-trips.
        val again = Receipt.fromJson(receipt.toJson(), LEDGER)
        assertTrue(again.sameAs(receipt))
        assertEquals(PAYER, again.verify())
    }

    test("engine: an adapter is used and named in the receipt") {
        Fixtures.generator.addAdapter("zephyr", Fixtures.zephyr.path)
        val answer = Fixtures.engine.ask(
            PRICING_Q,
            AskOptions(topK = 3u, maxTokens = 24u, adapters = listOf(AdapterWeight(id = "zephyr"))),
        )
        assertEquals(listOf(AdapterWeight("zephyr", 1.0f)), answer.adapters)
        val receipt = assertNotNull(answer.receipt)
        assertEquals(1, receipt.adapters().size)
        assertEquals(1.0, receipt.adapters()[0].weight)
        val e = assertFailsWith<TributeException.Adapter> {
            Fixtures.engine.ask(PRICING_Q, AskOptions(adapters = listOf(AdapterWeight("nope")), maxTokens = 4u))
        }
        assertTrue("no adapter registered" in e.message!!, e.message)
    }

    test("engine: askAsync suspends without blocking the coroutine's thread") {
        val ticks = AtomicInteger()
        val answer = runBlocking {
            val ticker = launch {
                while (true) {
                    ticks.incrementAndGet()
                    delay(10)
                }
            }
            val a = Fixtures.engine.askAsync(PRICING_Q, AskOptions(topK = 3u, maxTokens = 24u))
            ticker.cancel()
            a
        }
        assertTrue(ticks.get() > 5, "the caller's thread was blocked during askAsync (${ticks.get()} ticks)")
        assertEquals("zephyr-pricing", answer.citations[0].docId)
        assertEquals(PAYER, assertNotNull(answer.receipt).verify())
    }

    test("engine: cancelling askAsync cancels the ask (nothing is signed)") {
        val before = Fixtures.engine.receiptStats().receipts
        runBlocking {
            val job = launch(Dispatchers.Default) {
                Fixtures.engine.askAsync(PRICING_Q, AskOptions(topK = 3u, maxTokens = 160u))
            }
            delay(300)
            job.cancel()
            job.join()
        }
        // The next ask waits for the generator's one session; a cancelled ask never signs.
        Fixtures.engine.ask(GUST_Q, AskOptions(topK = 2u, maxTokens = 8u))
        Thread.sleep(1500)
        assertEquals(before + 1u, Fixtures.engine.receiptStats().receipts, "the cancelled ask signed a receipt")
    }

    test("engine: stream pieces concatenate to the answer, then citations and receipt") {
        val listener = Collector()
        val answer = assertNotNull(Fixtures.engine.stream(GUST_Q, AskOptions(topK = 3u), listener))
        assertTrue(listener.pieces.size > 1, "${listener.pieces}")
        assertEquals(answer.text.trim(), listener.pieces.joinToString("").trim())
        assertEquals(answer.text, assertNotNull(listener.done).text)
        checkCitations(answer)
        assertEquals("gust-field-notes", answer.citations[0].docId)
        assertEquals(PAYER, assertNotNull(answer.receipt).verify())
        // Greedy decoding: the streamed answer is the blocking one.
        assertEquals(answer.text, Fixtures.engine.ask(GUST_Q, AskOptions(topK = 3u)).text)
    }

    test("engine: a listener returning false stops the stream and frees the session") {
        val listener = Collector(stopAfter = 2)
        assertNull(Fixtures.engine.stream(PRICING_Q, AskOptions(topK = 2u), listener))
        assertEquals(2, listener.pieces.size)
        assertNull(listener.done)
        // The generator has one session: a leaked one would block this ask forever.
        val done = CountDownLatch(1)
        Thread { Fixtures.engine.ask(GUST_Q, AskOptions(topK = 2u, maxTokens = 8u)); done.countDown() }
            .apply { isDaemon = true }.start()
        assertTrue(done.await(120, TimeUnit.SECONDS), "the stopped stream kept the generator's session")
    }

    test("engine: a throwing listener is a typed error (the Rust panic is caught), and the engine lives on") {
        println("      (a Rust panic message and backtrace follow: expected)")
        val throwing = object : AskListener {
            override fun onText(text: String): Boolean = throw IllegalStateException("listener bug")
            override fun onDone(answer: Answer) {}
        }
        val e = assertFailsWith<TributeException.Internal> {
            Fixtures.engine.stream(PRICING_Q, AskOptions(topK = 2u, maxTokens = 8u), throwing)
        }
        assertTrue("panic" in e.message!! || "listener" in e.message!!, e.message)
        assertTrue(Fixtures.engine.search(PRICING_Q, 1u).isNotEmpty())
        val a = Fixtures.engine.ask(GUST_Q, AskOptions(topK = 2u, maxTokens = 8u))
        assertTrue(a.text.isNotEmpty())
    }

    test("engine: streamAsync reports from a worker thread; cancelling stops it") {
        val listener = Collector()
        val answer = runBlocking { Fixtures.engine.streamAsync(GUST_Q, AskOptions(topK = 3u, maxTokens = 24u), listener) }
        assertNotNull(answer)
        assertEquals(answer.text.trim(), listener.pieces.joinToString("").trim())
        assertTrue(Thread.currentThread().name !in listener.threads)
        // Cancel a second stream after its first piece: it stops and signs nothing.
        val before = Fixtures.engine.receiptStats().receipts
        val first = CountDownLatch(1)
        val slow = object : AskListener {
            val count = AtomicInteger()
            override fun onText(text: String): Boolean { count.incrementAndGet(); first.countDown(); return true }
            override fun onDone(answer: Answer) {}
        }
        runBlocking {
            val job = async(Dispatchers.Default) { Fixtures.engine.streamAsync(PRICING_Q, AskOptions(topK = 2u, maxTokens = 64u), slow) }
            assertTrue(first.await(120, TimeUnit.SECONDS))
            job.cancel()
        }
        // The stream stops after the current piece and frees the session for the next ask.
        val next = Fixtures.engine.ask(GUST_Q, AskOptions(topK = 2u, maxTokens = 8u))
        assertTrue(next.text.isNotEmpty())
        Thread.sleep(1500)
        assertEquals(before + 1u, Fixtures.engine.receiptStats().receipts, "the cancelled stream signed a receipt")
    }

    test("engine: receipts list, filter, verify; stats agree") {
        val engine = Fixtures.engine
        val all = engine.receipts()
        assertTrue(all.size >= 3, "${all.size} receipts")
        val pending = engine.receipts(ReceiptState.PENDING)
        assertEquals(all.size, pending.size)
        for (r in pending) {
            assertEquals(ReceiptState.PENDING, r.state)
            assertNull(r.batchId)
            assertEquals(PAYER, r.receipt.verify())
        }
        assertTrue(engine.receipts(ReceiptState.CONFIRMED).isEmpty())
        val stats = engine.receiptStats()
        assertEquals(all.size.toUInt(), stats.receipts)
        assertEquals(all.size.toUInt(), stats.pending)
        assertEquals(all.map { it.receipt.nonce() }.toSet().size, all.size)
    }

    test("engine: retrieve signs a retrieval receipt; search through the engine and its index") {
        val engine = Fixtures.engine
        val r = engine.retrieve(PRICING_Q, k = 3u)
        assertEquals("zephyr-pricing", r.hits[0].docId)
        assertEquals(10_000u, r.citations.sumOf { it.weightBps })
        val receipt = assertNotNull(r.receipt)
        assertEquals(PAYER, receipt.verify())
        assertEquals("100000000000000", receipt.feeWei())
        assertEquals("0x" + "00".repeat(32), receipt.modelId())
        val unsigned = engine.retrieve(PRICING_Q, sign = false)
        assertNull(unsigned.receipt)
        assertNotNull(unsigned.noReceipt)
        assertEquals("gust-field-notes", engine.search(GUST_Q, 1u)[0].docId)
        val kb = engine.index()
        assertEquals(5u, kb.documentCount())
        assertEquals("zephyr-pricing", kb.search(PRICING_Q, 1u)[0].docId)
        assertEquals("zephyr-pricing", kb.search(PRICING_Q, 1u, mode = SearchMode.BM25)[0].docId)
        assertFailsWith<TributeException.Request> { Engine(kb, generator = Fixtures.generator) }
    }

    test("engine: per-call search mode and datanets; ingest with progress and delete through its index") {
        val engine = Engine(Fixtures.sampleIndex("kb-search"), EngineOptions(), generator = Fixtures.generator)
        try {
            val kb = engine.index()
            assertEquals("gust-field-notes", engine.search(GUST_Q, 1u)[0].docId)
            val bm25 = engine.search(GUST_Q, 3u, mode = SearchMode.BM25)
            assertTrue(bm25.isNotEmpty() && bm25.all { it.bm25Score != null && it.denseScore == null })
            val dense = kb.search(GUST_Q, 3u, mode = SearchMode.DENSE)
            assertTrue(dense.isNotEmpty() && dense.all { it.denseScore != null && it.bm25Score == null })
            val pilot = engine.search(PRICING_Q, 5u, datanets = listOf("pilot-notes"))
            assertTrue(pilot.isNotEmpty() && pilot.all { it.datanet == "pilot-notes" }, "$pilot")
            assertTrue(kb.search(PRICING_Q, 5u, datanets = listOf("no-such-datanet")).isEmpty())

            val progress = ProgressCollector()
            val report = kb.add(
                listOf(Document(id = "cold", text = "Zephyr batteries last 25 minutes below freezing.")),
                datanet = "pilot-notes",
                contributor = BOB,
                listener = progress,
            )
            assertEquals(1u, report.added)
            assertEquals(1u, progress.seen.last().docsDone)
            assertEquals(6u, kb.documentCount())
            assertTrue(kb.delete("gust-field-notes"))
            assertTrue(!kb.delete("gust-field-notes"))
            assertEquals(5u, kb.documentCount())
            assertTrue(engine.search(GUST_Q, 5u).none { it.docId == "gust-field-notes" })
        } finally {
            engine.release()
        }
    }

    test("engine: a question without relevant sources signs nothing") {
        val answer = Fixtures.engine.ask("What is the boiling point of mercury in kelvin?")
        assertTrue(answer.citations.isEmpty())
        assertNull(answer.receipt)
        assertTrue("no source" in answer.noReceipt!!, answer.noReceipt)
    }

    test("errors: request, model, key and config errors are typed") {
        val engine = Fixtures.engine
        assertTrue("empty" in assertFailsWith<TributeException.Request> { engine.ask("   ") }.message!!)
        assertTrue("top_k" in assertFailsWith<TributeException.Request> { engine.ask(PRICING_Q, AskOptions(topK = 0u)) }.message!!)
        assertFailsWith<TributeException.Request> { engine.ask(PRICING_Q, AskOptions(feeWei = "-5")) }
        val m = assertFailsWith<TributeException.Model> { Generator.load(File(Fixtures.tmp, "no-model").path) }
        assertTrue("model directory" in m.message!!, m.message)
        assertFailsWith<TributeException.Model> { Index.open(File(Fixtures.tmp, "kb-x").path, embedder = File(Fixtures.tmp, "no-embedder").path) }
        val k = assertFailsWith<TributeException.Receipt> { Signer.fromHex("0xnot-a-key") }
        assertTrue("32-byte hex private key" in k.message!!, k.message)
        assertFailsWith<TributeException.Receipt> { Signer.fromEnv("TRIBUTE_TEST_UNSET_VARIABLE") }
        assertFailsWith<TributeException.Receipt> { Receipt.fromJson("{}") }
        assertFailsWith<TributeException.Config> { Receipt.fromJson("{}", Ledger(1uL, "0x12")) }
        val bad = File(Fixtures.tmp, "bad.toml").apply { writeText("index = \"kb\"\nno_such_key = 1\n") }
        assertTrue("no_such_key" in assertFailsWith<TributeException.Config> { Engine.fromConfig(bad.path) }.message!!)
        assertFailsWith<TributeException.Chain> { runBlocking { engine.settle() } }
    }

    test("engine: a failed build gives the index back; fromConfig; release") {
        val kb = Fixtures.sampleIndex("kb-build")
        val blocker = File(Fixtures.tmp, "journal-is-a-file").apply { writeText("") }
        assertFailsWith<TributeException.Receipt> {
            Engine(kb, EngineOptions(journal = blocker.path), generator = Fixtures.generator)
        }
        assertFailsWith<TributeException.Config> {
            Engine(kb, EngineOptions(ledger = Ledger(1uL, "0x12")), generator = Fixtures.generator)
        }
        assertTrue(!kb.isClosed())
        assertEquals(ALICE, kb.search("Zephyr installer disk space", 1u)[0].contributor)
        kb.release()

        val dir = File(Fixtures.tmp, "from-config").apply { mkdirs() }
        val config = File(dir, "tribute.toml")
        config.writeText(
            "index = \"kb\"\n[retrieval]\ntop_k = 2\n" +
                "[receipts]\njournal = \"receipts\"\nledger = { chainId = 31337, contract = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\" }\n",
        )
        val engine = Engine.fromConfig(config.path)
        assertTrue("\"top_k\":2" in engine.configJson(), engine.configJson())
        assertEquals(LEDGER, engine.ledger())
        assertEquals(File(dir, "kb").path, engine.index().path())
        engine.index().addFiles(listOf(File(Fixtures.sample, "bob.jsonl").path))
        assertEquals("gust-field-notes", engine.search(GUST_Q, 1u)[0].docId)
        engine.release()
        assertTrue(engine.isClosed() && engine.index().isClosed())
        assertTrue("closed" in assertFailsWith<TributeException.Request> { engine.ask(GUST_Q) }.message!!)
        // The journal and index were released: a new engine can open them.
        val again = Engine(Index.open(File(dir, "kb").path), EngineOptions(journal = File(dir, "receipts").path), Fixtures.generator)
        assertEquals(2u, again.index().documentCount())
        again.release()
        again.close() // AutoCloseable: frees the Rust handle
    }

    test("engine: a dominant low-trust source raises the source guard's alert") {
        val dir = File(Fixtures.tmp, "guard").apply { mkdirs() }
        val config = File(dir, "tribute.toml")
        config.writeText("index = \"kb\"\n[datanets.pilot-notes]\ntrust = \"low\"\n")
        Engine.fromConfig(config.path).use { engine ->
            engine.index().addFiles(listOf(File(Fixtures.sample, "bob.jsonl").path))
            val answer = engine.ask(GUST_Q, AskOptions(topK = 2u, method = AttributionMethod.LOO))
            val alert = assertNotNull(answer.sourceAlert, answer.citations.toString())
            assertEquals(Triple("gust-field-notes", BOB, "pilot-notes"), Triple(alert.docId, alert.contributor, alert.datanet))
            assertEquals(AlertReason.LOW_TRUST, alert.reason)
            assertTrue(alert.share >= 0.6, "$alert")
            assertTrue(!alert.reanswered && alert.replacedAnswer == null)
            assertTrue("\"source_alert\"" in answer.json)
        }
    }

    test("engine: settle pays the contributors on a local chain; a down chain keeps receipts pending") {
        LocalChain(File(Fixtures.tmp, "chain")).use { chain ->
            val engine = Engine(
                index = Fixtures.sampleIndex("kb-settle"),
                options = EngineOptions(
                    ledger = loadLedger(chain.ledger.path),
                    journal = File(Fixtures.tmp, "receipts-settle").path,
                    maxTokens = 32u,
                    chain = ChainOptions(rpc = chain.rpc, treasury = TREASURY, timeoutSecs = 5u),
                ),
                generator = Fixtures.generator,
                signer = Signer.fromHex(KEY0),
            )
            try {
                assertEquals(PAYER, engine.payer())
                val answers = listOf(engine.ask(PRICING_Q, AskOptions(topK = 3u)), engine.ask(GUST_Q, AskOptions(topK = 3u)))
                assertTrue(answers.all { it.receipt != null }, answers.map { it.noReceipt }.toString())
                assertEquals(2u, engine.receiptStats().pending)

                val report = runBlocking { engine.settle() }
                assertEquals(1, report.batches.size, "$report")
                val batch = report.batches[0]
                assertEquals(2u, batch.receipts)
                assertTrue(batch.gasUsed > 0uL)
                assertTrue(batch.txHash.startsWith("0x") && batch.block != null, "$batch")
                // Σ payouts = Σ fees (10^15 wei per answer).
                assertEquals("2000000000000000", batch.totalWei)
                assertTrue(report.skipped.isEmpty(), "${report.skipped}")
                assertEquals(0u, report.stillPending)
                // One confirmation by default: nothing waits, nothing was reorged or left open.
                assertTrue(report.awaiting.isEmpty() && report.reorged.isEmpty(), "$report")
                assertTrue(report.moved.isEmpty() && report.unresolved.isEmpty(), "$report")
                assertEquals(2, engine.receipts(ReceiptState.CONFIRMED).size)
                assertEquals(0u, engine.receiptStats().pending)

                // The default split: 70 % to the contributors by citation weight, 15 % to the
                // model owner plus the 10 % of adapter authors (no adapter was used), 5 % to
                // the treasury.
                val paid = chain.balances(ALICE, BOB, MODEL_OWNER, TREASURY)
                val e13 = BigInteger.TEN.pow(13)
                assertEquals(e13 * 140.toBigInteger(), paid.getValue(ALICE) + paid.getValue(BOB), "$paid")
                assertTrue(paid.getValue(BOB) > BigInteger.ZERO, "$paid")
                assertEquals(e13 * 50.toBigInteger(), paid.getValue(MODEL_OWNER), "$paid")
                assertEquals(e13 * 10.toBigInteger(), paid.getValue(TREASURY), "$paid")
                // Nothing left to settle.
                assertTrue(runBlocking { engine.settle() }.batches.isEmpty())

                // The chain goes down: the ask still answers, its receipt stays pending.
                chain.stop()
                assertNotNull(engine.ask(PRICING_Q, AskOptions(topK = 2u)).receipt)
                assertFailsWith<TributeException.Chain> { runBlocking { engine.settle() } }
                assertEquals(1u, engine.receiptStats().pending)
            } finally {
                engine.release()
                engine.close()
            }
        }
    }
}

/** `substring` by Unicode code points (the answer's sentence offsets count characters). */
fun String.codePointsSlice(start: Int, end: Int): String =
    substring(offsetByCodePoints(0, start), offsetByCodePoints(0, end))

fun main() {
    Fixtures.require(File(Fixtures.sample, "alice.jsonl"), "the sample datanet")
    Fixtures.require(File(Fixtures.home, "models/all-MiniLM-L6-v2"), "the default embedder (MiniLM)")
    Fixtures.require(File(Fixtures.home, "models/SmolLM2-135M-Instruct"), "the default generator (SmolLM2)")
    Fixtures.require(Fixtures.zephyr, "the zephyr LoRA adapter")
    registerTests()
    val only = System.getenv("TRIBUTE_KOTLIN_TESTS")?.takeIf { it.isNotBlank() }
    var passed = 0
    var skipped = 0
    val failed = mutableListOf<String>()
    val started = System.nanoTime()
    for ((name, body) in tests) {
        if (only != null && only !in name) continue
        val t0 = System.nanoTime()
        try {
            body()
            passed++
            println("PASS  %-90s %6.1f s".format(name, (System.nanoTime() - t0) / 1e9))
        } catch (e: Skipped) {
            skipped++
            println("SKIP  $name: ${e.message}")
        } catch (e: Throwable) {
            failed += name
            println("FAIL  $name")
            e.printStackTrace(System.out)
        }
    }
    runCatching { Fixtures.engine.release() }
    Fixtures.tmp.deleteRecursively()
    println("\n$passed passed, ${failed.size} failed, $skipped skipped in %.1f s".format((System.nanoTime() - started) / 1e9))
    if (failed.isNotEmpty()) {
        failed.forEach { println("  failed: $it") }
        exitProcess(1)
    }
    exitProcess(0)
}
