// Smoke test of the generated Kotlin bindings of linli-ffi, on the JVM through JNA.
//
// Run by `cargo test -p linli-ffi --test bindings`, which compiles the generated Kotlin into a
// jar, starts a demo server and sets LINLI_SERVER_URL (the server) and LINLI_TEST_HOME (a scratch
// directory). It checks the boundary, not the SDK's logic (the Rust tests do that): records,
// default arguments, typed exceptions, the callback interface, one real sync story, and two
// FieldClients on one store driven from two threads at once.

import linli.ffi.ApiException
import linli.ffi.FieldClient
import linli.ffi.FieldValue
import linli.ffi.SyncListener
import linli.ffi.SyncProgress
import linli.ffi.recordKinds
import java.util.concurrent.ConcurrentLinkedQueue
import java.util.concurrent.CopyOnWriteArrayList
import kotlin.concurrent.thread

val url = System.getenv("LINLI_SERVER_URL") ?: error("LINLI_SERVER_URL is not set")
val home = System.getenv("LINLI_TEST_HOME") ?: error("LINLI_TEST_HOME is not set")
val password = "linli-demo"
val estate = "hz/baiyang/haitian/haitiancheng" // inside bus1's and bus2's grant (海天社区)
val outOfScope = "hz/baiyang/dabei/wenhuiyuan" // 文汇苑, in 大北社区: not theirs

fun fields(vararg pairs: Pair<String, String>) = pairs.map { FieldValue(it.first, it.second) }

inline fun <reified E : Throwable> expect(block: () -> Unit): E {
    try {
        block()
    } catch (e: Throwable) {
        if (e is E) return e
        throw AssertionError("expected ${E::class.simpleName}, got $e", e)
    }
    throw AssertionError("expected ${E::class.simpleName}, got no exception")
}

class Listener : SyncListener {
    val progress = CopyOnWriteArrayList<SyncProgress>()
    val newRecords = CopyOnWriteArrayList<String>()

    override fun onProgress(progress: SyncProgress) {
        this.progress.add(progress)
    }

    override fun onNewData(recordIds: List<String>) {
        newRecords.addAll(recordIds)
    }
}

/** The number of a tally field in a record's merged JSON value. */
fun tallyOf(valueJson: String, field: String): Long =
    Regex("\"$field\":(-?\\d+)").find(valueJson)?.groupValues?.get(1)?.toLong()
        ?: error("no tally $field in the record")

// --- The schema crosses as plain data classes.
val kinds = recordKinds().associateBy { it.code }
check(kinds.keys == setOf("case", "bus", "contact", "volunteer")) { kinds.keys }
check(kinds.getValue("bus").fields.any { it.name == "leaflets" && it.fieldType == "tally" })

// --- Typed exceptions: a wrong password, an unreachable server, a bad argument.
val phone = FieldClient("$home/bus1-phone", url)
val refused = expect<ApiException.Unauthorized> { phone.login("bus1", "not-the-password") }
check("not-the-password" !in refused.toString()) { refused }
val badUrl = expect<ApiException.InvalidInput> { FieldClient("$home/x", "ftp://x") }
check(badUrl.field == "server_url") { badUrl.field }
expect<ApiException.Offline> { FieldClient("$home/unreachable", "http://127.0.0.1:9").login("bus1", password) }

val user = phone.login("bus1", password)
check(user.username == "bus1" && user.role == "bus") { user }
check(user.places.map { it.id } == listOf("hz/baiyang/haitian")) { user.places }

// --- A case recorded offline (no call below touches the network), then synced.
val case = phone.create(
    "case", estate,
    fields("summary" to "3幢楼道堆放杂物", "source" to "bus_session", "category" to "fire_safety"),
)
phone.set(case, fields("status" to "assigned", "departments" to "fire_brigade,property_company"))
phone.note(case, "已通知物业当天清理")
check(phone.whoami().pendingChanges == 3u)
val forbidden = expect<ApiException.Forbidden> {
    phone.create("case", outOfScope, fields("summary" to "越界", "source" to "hotline"))
}
check(forbidden.reason.isNotEmpty())
val badField = expect<ApiException.InvalidInput> { phone.set(case, fields("colour" to "red")) }
check(badField.field == "colour") { badField.field }
expect<ApiException.NotFound> { phone.get("00000000-0000-4000-8000-000000000000") }

val listener = Listener()
phone.setSyncListener(listener)
val first = phone.sync()
check(first.pushed == 3u && first.accepted == 3u && first.rejected.isEmpty() && !first.morePending) { first }
check(listener.progress.last().done) { listener.progress }

// --- bus2 pulls the case and adds a note; bus1 reads back the merged record.
val other = FieldClient("$home/bus2-phone")
other.login("bus2", password, serverUrl = url)
other.sync()
other.note(case, "消防大队已到场")
check(other.sync().accepted == 1u)
check(phone.sync().pulled == 1u)
check(case in listener.newRecords) { listener.newRecords }
val view = phone.get(case)
check(view.status == "assigned" && view.pendingChanges == 0u) { view }
check("已通知物业当天清理" in view.valueJson && "消防大队已到场" in view.valueJson) { view.valueJson }
check(view.history.map { it.user }.toSet() == setOf("bus1", "bus2")) { view.history }

// --- A listener that throws does not break the sync.
phone.setSyncListener(object : SyncListener {
    override fun onProgress(progress: SyncProgress) = throw IllegalStateException("app bug")
    override fun onNewData(recordIds: List<String>) = throw IllegalStateException("app bug")
})
phone.sync()
phone.setSyncListener(null)

// --- Two FieldClients on ONE store, driven from two threads at once (plus a third syncing).
val shared = "$home/shared-phone"
val a = FieldClient(shared, url)
a.login("bus2", password)
val session = a.create(
    "bus", estate,
    fields("session_type" to "service_bus", "date" to "2026-11-23", "run_number" to "1801"),
)
val b = FieldClient(shared, url)
val perThread = 20
val created = ConcurrentLinkedQueue<String>()
val failures = ConcurrentLinkedQueue<Throwable>()
val workers = listOf(a, b).mapIndexed { t, client ->
    thread(name = "editor-$t") {
        try {
            repeat(perThread) { n ->
                client.tally(session, "leaflets", 1)
                val id = client.create(
                    "case", estate,
                    fields("summary" to "线程$t 第$n 件", "source" to "bus_session", "category" to "other"),
                )
                created.add(id)
                client.note(id, "note $t/$n")
                client.list()
                client.get(id)
            }
        } catch (e: Throwable) {
            failures.add(e)
        }
    }
}
val syncer = thread(name = "syncer") {
    try {
        repeat(3) { a.sync() }
    } catch (e: Throwable) {
        failures.add(e)
    }
}
(workers + syncer).forEach { it.join() }
check(failures.isEmpty()) { failures.joinToString("\n") }

// A third client opened afterwards sees every edit of both threads (and the case bus1 recorded
// above, pulled by the syncs), and the server takes them all.
val c = FieldClient(shared)
check(created.size == 2 * perThread)
check(c.list().map { it.id }.toSet() == created.toSet() + session + case) { c.list().size }
check(tallyOf(c.get(session).valueJson, "leaflets") == 2L * perThread)
val last = c.sync()
check(last.rejected.isEmpty() && !last.morePending) { last }
check(c.whoami().pendingChanges == 0u && c.outbox().isEmpty())
val reader = FieldClient("$home/bus1-second-phone", url)
reader.login("bus1", password)
reader.sync()
val seen = reader.list().map { it.id }.toSet()
check(c.list().all { it.id in seen })
check(tallyOf(reader.get(session).valueJson, "leaflets") == 2L * perThread)

listOf(phone, other, a, b, c, reader).forEach { it.close() }
println("kotlin smoke test: ok")
