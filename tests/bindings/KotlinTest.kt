// The generated Kotlin bindings on the JVM (JNA) against the real shared library: a node runs an
// example job locally, then joins a real coordinator process on loopback, bids, wins, runs, is
// paused by an unplug mid-job and resumed, and gets paid. Exits non-zero on the first failed check.
//
// usage (scripts/test-bindings.sh): java ... KotlinTestKt ROOT ICN_BIN WORK_DIR

import java.io.File
import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.TimeUnit
import kotlinx.coroutines.runBlocking
import uniffi.icn_mesh.*

fun check(cond: Boolean, what: () -> String) {
    if (!cond) {
        System.err.println("FAIL: " + what())
        kotlin.system.exitProcess(1)
    }
}

fun run(vararg cmd: String): String {
    val p = ProcessBuilder(*cmd).redirectError(ProcessBuilder.Redirect.INHERIT).start()
    val out = p.inputStream.bufferedReader().readText()
    check(p.waitFor() == 0) { "${cmd.joinToString(" ")} failed" }
    return out
}

/** The value of a top-level string field in compact or pretty JSON (enough for these checks). */
fun field(json: String, name: String): String? =
    Regex("\"$name\"\\s*:\\s*\"([^\"]*)\"").findAll(json).lastOrNull()?.groupValues?.get(1)

class Recorder : NodeListener {
    val events = CopyOnWriteArrayList<Pair<Long, NodeEvent>>()

    override fun onEvent(event: NodeEvent) {
        events.add(System.nanoTime() to event)
    }

    fun <T : NodeEvent> waitFor(kind: Class<T>, seconds: Long = 60): T {
        val end = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds)
        while (System.nanoTime() < end) {
            events.map { it.second }.firstOrNull { kind.isInstance(it) }?.let { return kind.cast(it) }
            Thread.sleep(20)
        }
        check(false) { "no ${kind.simpleName}; got ${events.map { it.second::class.simpleName }}" }
        throw IllegalStateException()
    }
}

fun main(args: Array<String>) {
    val (root, icn, work) = args
    val echo = File("$root/examples/jobs/echo.wasm").readBytes()

    // Local run.
    val node = MeshNode("$work/node")
    check(node.did().startsWith("did:key:z6Mk")) { "did ${node.did()}" }
    val local = runBlocking {
        node.runLocal("""{"runtime": {"type": "WASM"}, "budget": {"max_total": 1}}""", echo, "hi from Kotlin".toByteArray())
    }
    check(local.status == "completed") { "local run: ${local.json}" }
    check(String(local.output) == "hi from Kotlin") { "output ${String(local.output)}" }
    check(local.resultCid?.startsWith("bafyrei") == true) { "result cid ${local.resultCid}" }
    try {
        node.setDeviceState(DeviceState(batteryPercent = 140.0))
        check(false) { "battery 140% accepted" }
    } catch (e: MeshException.Refused) {
        check(e.code == "J001") { "code ${e.code}" }
    }

    // The mesh.
    val good = DeviceState(charging = true, batteryPercent = 95.0, batteryTempC = 30.0, thermal = Thermal.NONE,
                           screenOn = false, metered = false)
    check(node.setDeviceState(good).decision == Decision.RUN) { "a good state runs" }
    val clientKey = "$work/client.key"
    val client = field(run(icn, "keygen", "--out", clientKey, "--json"), "did")!!
    val coordDir = File("$work/coordinator")
    val coordinator = ProcessBuilder(icn, "coordinator", "--listen", "127.0.0.1:0", "--data", coordDir.path,
        "--grant", "$client=100000", "--grant", "${node.did()}=1000")
        .redirectOutput(ProcessBuilder.Redirect.DISCARD).redirectError(ProcessBuilder.Redirect.DISCARD).start()
    try {
        val addressFile = File(coordDir, "address")
        val end = System.nanoTime() + TimeUnit.SECONDS.toNanos(20)
        while (!addressFile.exists() || addressFile.readText().isBlank()) {
            check(System.nanoTime() < end) { "the coordinator never wrote its address" }
            Thread.sleep(50)
        }
        val address = addressFile.readText().trim()
        val recorder = Recorder()
        node.start(address, 40000uL, recorder)
        recorder.waitFor(NodeEvent.Connected::class.java)
        File("$work/spec.json").writeText(
            """{"runtime": {"type": "WASM", "memory_pages": 256}, "budget": {"max_total": 100},
               "compute": {"estimated_cpu_hours": 0.001}}""")
        File("$work/in.txt").writeText("4000000")
        val submit = ProcessBuilder(icn, "job", "submit", "$work/spec.json", "--coordinator", address,
            "--key", clientKey, "--module", "$root/examples/jobs/sieve.wasm", "--input", "$work/in.txt",
            "--wait", "--json").redirectError(ProcessBuilder.Redirect.INHERIT).start()
        recorder.waitFor(NodeEvent.Awarded::class.java)
        recorder.waitFor(NodeEvent.Progress::class.java)
        // Unplugged mid-job: paused between fuel slices.
        val paused = node.setDeviceState(DeviceState(charging = false))
        check(paused.decision == Decision.PAUSE && paused.reason.contains("not charging")) { "unplug: $paused" }
        Thread.sleep(300)
        val mark = recorder.events.size
        Thread.sleep(1500)
        val during = recorder.events.drop(mark).map { it.second }
            .filter { it is NodeEvent.Progress || it is NodeEvent.Finished }
        check(during.isEmpty()) { "the job ran on while paused: $during" }
        // Plugged back in: resumes and completes.
        check(node.setDeviceState(DeviceState(charging = true)).decision == Decision.RUN) { "plugged in" }
        val finished = recorder.waitFor(NodeEvent.Finished::class.java)
        check(finished.status == "completed") { "finished $finished" }
        val receipt = recorder.waitFor(NodeEvent.Receipt::class.java)
        check(receipt.paid > 0uL) { "paid ${receipt.paid}" }
        val out = submit.inputStream.bufferedReader().readText()
        check(submit.waitFor() == 0) { "submit failed: $out" }
        check(field(out, "status") == "completed") { "final report $out" }
        check(out.contains(node.did())) { "the node is the executor: $out" }
        val balance = runBlocking { node.balance(address) }
        check(balance.balance == 1000uL + receipt.paid) { "balance $balance, paid ${receipt.paid}" }
        node.stop()
    } finally {
        coordinator.destroyForcibly().waitFor()
    }
    node.close()
    println("Kotlin on the JVM: all checks passed")
}
