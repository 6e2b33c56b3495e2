// Smoke test of the generated Kotlin bindings of linli-ffi, on the JVM through JNA.
//
// Run by `cargo test -p linli-ffi --test bindings`, which compiles the generated Kotlin into a
// jar, starts a demo server and sets LINLI_SERVER_URL (the server) and LINLI_TEST_HOME (a scratch
// directory). It checks the boundary, not the SDK's logic (the Rust tests do that): records,
// enums (matched exhaustively, so a new case breaks this build), default arguments, typed
// exceptions, the callback interfaces (listener, secret store, logger), one real sync story, and
// two FieldClients on one store driven from two threads at once.

import linli.ffi.ApiException
import linli.ffi.AppLogger
import linli.ffi.ChangeState
import linli.ffi.FieldClient
import linli.ffi.FieldType
import linli.ffi.FieldValue
import linli.ffi.LogLevel
import linli.ffi.OutboxState
import linli.ffi.RecordKind
import linli.ffi.RejectCode
import linli.ffi.Role
import linli.ffi.SecretStore
import linli.ffi.SecretStoreException
import linli.ffi.SyncListener
import linli.ffi.SyncProgress
import linli.ffi.installLogger
import linli.ffi.recordKinds
import java.util.concurrent.ConcurrentHashMap
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

    override fun onDeviceRevoked(unsentChanges: UInt) {}
}

/** The app's secret store: here a map standing in for the Android Keystore. */
class KeystoreSecrets : SecretStore {
    val values = ConcurrentHashMap<String, String>()
    val calls = java.util.concurrent.atomic.AtomicInteger()

    override fun get(key: String): String? {
        calls.incrementAndGet()
        return values[key]
    }

    override fun set(key: String, value: String) {
        calls.incrementAndGet()
        values[key] = value
    }

    override fun delete(key: String) {
        calls.incrementAndGet()
        values.remove(key)
    }
}

class Logs : AppLogger {
    val lines = CopyOnWriteArrayList<String>()
    override fun log(level: LogLevel, target: String, message: String) {
        lines.add("$level $target $message")
    }
}

// Exhaustive `when` over every exported enum, without `else`: a case added on the Rust side
// breaks this compilation until the app handles it.
fun label(k: RecordKind): String = when (k) {
    RecordKind.CASE -> "诉求"
    RecordKind.BUS -> "直通车班次"
    RecordKind.CONTACT -> "走访记录"
    RecordKind.VOLUNTEER -> "志愿服务"
}
fun label(r: Role): String = when (r) {
    Role.STEWARD -> "楼长"
    Role.BUS -> "直通车"
    Role.OFFICE -> "社区/街道"
    Role.ADMIN -> "系统管理员"
}
fun label(s: OutboxState): String = when (s) {
    OutboxState.PENDING -> "待发送"
    OutboxState.REJECTED -> "被拒绝"
}
fun label(s: ChangeState): String = when (s) {
    ChangeState.SYNCED -> "已同步"
    ChangeState.PENDING -> "待发送"
    ChangeState.REJECTED -> "被拒绝"
    ChangeState.UNKNOWN -> "未知"
}
fun label(c: RejectCode): String = when (c) {
    RejectCode.MALFORMED_CHANGE -> "数据损坏"
    RejectCode.MISSING_DEPENDENCIES -> "等待前序修改"
    RejectCode.INVALID_RECORD -> "内容不合规"
    RejectCode.READ_ONLY_FIELD -> "只读字段"
    RejectCode.KIND_MISMATCH -> "类型不符"
    RejectCode.OUT_OF_SCOPE -> "超出管辖范围"
    RejectCode.FOREIGN_ACTOR -> "设备身份不符"
    RejectCode.FORBIDDEN -> "无此权限"
    RejectCode.SERVER_ERROR -> "服务器错误"
    RejectCode.CLOCK_SKEW -> "手机时间不对"
    RejectCode.RECORD_REPLACED -> "记录已重建"
}
fun label(t: FieldType): String = when (t) {
    FieldType.STR, FieldType.DATE, FieldType.PHONE, FieldType.NUMBER -> "输入框"
    FieldType.CODE -> "单选"
    FieldType.CODES, FieldType.LIST -> "多选"
    FieldType.TEXT -> "多行文本"
    FieldType.TALLY -> "计数"
    FieldType.FIXED -> "只读"
}
fun label(l: LogLevel): String = when (l) {
    LogLevel.ERROR, LogLevel.WARN -> "!"
    LogLevel.INFO, LogLevel.DEBUG, LogLevel.TRACE -> "."
}

val logs = Logs()
installLogger(logs, LogLevel.DEBUG)
check(RejectCode.values().map { label(it) }.toSet().size == RejectCode.values().size)

/** The number of a tally field in a record's merged JSON value. */
fun tallyOf(valueJson: String, field: String): Long =
    Regex("\"$field\":(-?\\d+)").find(valueJson)?.groupValues?.get(1)?.toLong()
        ?: error("no tally $field in the record")

// --- The schema crosses as plain data classes.
val kinds = recordKinds().associateBy { it.kind }
check(kinds.keys == RecordKind.values().toSet()) { kinds.keys }
check(kinds.getValue(RecordKind.BUS).fields.any { it.name == "leaflets" && it.fieldType == FieldType.TALLY })
check(kinds.values.all { label(it.kind).isNotEmpty() && it.fields.all { f -> label(f.fieldType).isNotEmpty() } })

// --- Typed exceptions: a wrong password, an unreachable server, a bad argument. The login is
// kept in the app's secret store, never in the SDK's database.
val secrets = KeystoreSecrets()
val phone = FieldClient("$home/bus1-phone", url, secrets = secrets)
val refused = expect<ApiException.Unauthorized> { phone.login("bus1", "not-the-password") }
check("not-the-password" !in refused.toString()) { refused }
val badUrl = expect<ApiException.InvalidInput> { FieldClient("$home/x", "ftp://x") }
check(badUrl.field == "server_url") { badUrl.field }
expect<ApiException.Offline> { FieldClient("$home/unreachable", "http://127.0.0.1:9").login("bus1", password) }

val user = phone.login("bus1", password)
check(user.username == "bus1" && user.role == Role.BUS && label(user.role) == "直通车") { user }
check(secrets.values.keys == setOf("access_token", "refresh_token")) { secrets.values.keys }
val dbBytes = java.io.File("$home/bus1-phone/linli-phone.db").readBytes() +
    (java.io.File("$home/bus1-phone/linli-phone.db-wal").takeIf { it.exists() }?.readBytes() ?: ByteArray(0))
val token = secrets.values.getValue("access_token").toByteArray()
check(java.util.Collections.indexOfSubList(dbBytes.toList(), token.toList()) < 0) { "a token reached the database file" }
check(logs.lines.any { "logged in" in it }) { logs.lines }
check(user.places.map { it.id } == listOf("hz/baiyang/haitian")) { user.places }

// --- A case recorded offline (no call below touches the network), then synced.
val case = phone.create(
    RecordKind.CASE, estate,
    fields("summary" to "3幢楼道堆放杂物", "source" to "bus_session", "category" to "fire_safety"),
)
phone.set(case, fields("status" to "assigned", "departments" to "fire_brigade,property_company"))
phone.note(case, "已通知物业当天清理")
check(phone.whoami().pendingChanges == 3u)
val forbidden = expect<ApiException.Forbidden> {
    phone.create(RecordKind.CASE, outOfScope, fields("summary" to "越界", "source" to "hotline"))
}
check(forbidden.reason.isNotEmpty())
val badField = expect<ApiException.InvalidInput> { phone.set(case, fields("colour" to "red")) }
check(badField.field == "colour") { badField.field }
expect<ApiException.NotFound> { phone.get("00000000-0000-4000-8000-000000000000") }

val listener = Listener()
phone.setSyncListener(listener)
val first = phone.sync()
check(first.pushed == 3u && first.accepted == 3u && first.rejected.isEmpty() && !first.morePending) { first }
check(phone.get(case).history.all { it.state == ChangeState.SYNCED && label(it.state) == "已同步" })
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
    override fun onDeviceRevoked(unsentChanges: UInt) = throw IllegalStateException("app bug")
})
phone.sync()
phone.setSyncListener(null)

// --- Two FieldClients on ONE store, driven from two threads at once (plus a third syncing).
val shared = "$home/shared-phone"
val a = FieldClient(shared, url)
a.login("bus2", password)
val session = a.create(
    RecordKind.BUS, estate,
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
                    RecordKind.CASE, estate,
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

// --- A refused edit: its code is an enum the app matches exhaustively.
val steward = FieldClient("$home/steward-phone", url)
steward.login("steward1", password)
steward.sync()
val stewardCase = steward.create(
    RecordKind.CASE, "$estate/b3",
    fields("summary" to "3幢电梯异响", "source" to "steward_contact"),
)
steward.logout() // signed out, the phone cannot check the role: the server will refuse it
steward.set(stewardCase, fields("status" to "evaluated", "satisfaction" to "satisfied"))
steward.login("steward1", password)
val refusedSync = steward.sync()
val item = steward.outbox().single()
check(item.state == OutboxState.REJECTED && item.rejectCode == RejectCode.FORBIDDEN) { item }
check(label(item.rejectCode!!) == "无此权限" && label(item.kind) == "诉求")
check(refusedSync.rejected.single().code == RejectCode.FORBIDDEN)

// --- A secret store that fails surfaces as a typed Storage error, not a crash.
val broken = object : SecretStore {
    override fun get(key: String): String? = throw SecretStoreException.Failed("keystore locked")
    override fun set(key: String, value: String) = throw SecretStoreException.Failed("keystore locked")
    override fun delete(key: String) = throw SecretStoreException.Failed("keystore locked")
}
val lockedOut = FieldClient("$home/locked-phone", url, secrets = broken)
val storage = expect<ApiException.Storage> { lockedOut.login("bus1", password) }
check("keystore locked" in storage.reason) { storage }

listOf(phone, other, a, b, c, reader, steward, lockedOut).forEach { it.close() }
check(secrets.calls.get() > 0)
println("kotlin smoke test: ok")
