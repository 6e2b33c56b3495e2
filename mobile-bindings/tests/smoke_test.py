"""Smoke test of the generated Python bindings of linli-ffi, through ctypes.

Run by `cargo test -p linli-ffi --test bindings`, which generates `linli_ffi.py` next to the
library, starts a demo server and sets LINLI_SERVER_URL (the server) and LINLI_TEST_HOME (a
scratch directory). It checks the boundary, not the SDK's logic (the Rust tests do that):
records, enums, optional arguments, typed errors, the callback interfaces (listener, secret
store), and one real sync story.
"""

import json
import os

from linli_ffi import (
    ApiError,
    ChangeState,
    FieldClient,
    FieldValue,
    OutboxState,
    RecordKind,
    RejectCode,
    Role,
    SecretStore,
    SyncListener,
    record_kinds,
)

URL = os.environ["LINLI_SERVER_URL"]
HOME = os.environ["LINLI_TEST_HOME"]
PASSWORD = "linli-demo"
ESTATE = "hz/baiyang/haitian/haitiancheng"  # inside bus1's and bus2's grant (海天社区)
OUT_OF_SCOPE = "hz/baiyang/dabei/wenhuiyuan"  # 文汇苑, in 大北社区: not theirs


def fields(**values):
    return [FieldValue(name=k, value=v) for k, v in values.items()]


def expect(error, call):
    """Runs `call`, which must raise `error`; returns the exception."""
    try:
        call()
    except error as e:
        return e
    raise AssertionError(f"expected {error.__name__}")


class Listener(SyncListener):
    def __init__(self):
        self.progress = []
        self.new_records = []

    def on_progress(self, progress):
        self.progress.append(progress)

    def on_new_data(self, record_ids):
        self.new_records.extend(record_ids)

    def on_device_revoked(self, unsent_changes):
        pass


class Secrets(SecretStore):
    """The app's secret store (here a dict standing in for the platform keystore)."""

    def __init__(self):
        self.values = {}

    def get(self, key):
        return self.values.get(key)

    def set(self, key, value):
        self.values[key] = value

    def delete(self, key):
        self.values.pop(key, None)


# The schema crosses as plain records.
kinds = {k.kind: k for k in record_kinds()}
assert set(kinds) == {RecordKind.CASE, RecordKind.BUS, RecordKind.CONTACT, RecordKind.VOLUNTEER}
status = next(f for f in kinds[RecordKind.CASE].fields if f.name == "status")
assert "resolved" in [c.code for c in status.choices]

# Typed errors, with their fields, and without the secrets or values that caused them.
secrets = Secrets()
phone = FieldClient(os.path.join(HOME, "bus1-phone"), URL, secrets=secrets)
e = expect(ApiError.Unauthorized, lambda: phone.login("bus1", "not-the-password"))
assert "not-the-password" not in str(e), str(e)
e = expect(ApiError.InvalidInput, lambda: FieldClient(os.path.join(HOME, "x"), "ftp://x"))
assert e.field == "server_url", e.field
unreachable = FieldClient(os.path.join(HOME, "unreachable"), "http://127.0.0.1:9")
expect(ApiError.Offline, lambda: unreachable.login("bus1", PASSWORD))

user = phone.login("bus1", PASSWORD)
assert user.username == "bus1" and user.role == Role.BUS, user
assert set(secrets.values) == {"access_token", "refresh_token"}, secrets.values
assert [p.id for p in user.places] == ["hz/baiyang/haitian"], user.places
who = phone.whoami()
assert who.logged_in and who.user.username == "bus1" and who.server_url == URL, who

# A case recorded offline: none of these calls touches the network.
case = phone.create(
    RecordKind.CASE, ESTATE, fields(summary="3幢楼道堆放杂物", source="bus_session", category="fire_safety")
)
phone.set(case, fields(status="assigned", departments="fire_brigade,property_company"))
phone.note(case, "已通知物业当天清理")
assert phone.whoami().pending_changes == 3
assert [item.state for item in phone.outbox()] == [OutboxState.PENDING] * 3
expect(ApiError.Conflict, lambda: phone.discard(phone.outbox()[0].id))  # pending, not refused

e = expect(
    ApiError.Forbidden,
    lambda: phone.create(RecordKind.CASE, OUT_OF_SCOPE, fields(summary="越界", source="hotline")),
)
e = expect(ApiError.InvalidInput, lambda: phone.set(case, fields(colour="red")))
assert e.field == "colour", e.field
e = expect(ApiError.InvalidInput, lambda: phone.set(case, fields(resident_phone="call 555 secret")))
assert e.field == "resident_phone" and "secret" not in str(e), str(e)
expect(ApiError.NotFound, lambda: phone.get("00000000-0000-4000-8000-000000000000"))

listener = Listener()
phone.set_sync_listener(listener)
report = phone.sync()
assert (report.pushed, report.accepted, report.rejected) == (3, 3, []), report
assert not report.more_pending, report
assert listener.progress and listener.progress[-1].done, listener.progress
assert phone.whoami().pending_changes == 0

# A second phone (bus2) pulls the case; both phones change its status while apart.
other = FieldClient(os.path.join(HOME, "bus2-phone"))
other.login("bus2", PASSWORD, server_url=URL)
# A new phone gets the case as one saved document, not its three changes one by one.
assert other.sync().pulled == 1
assert case in [s.id for s in other.list()]
other.set(case, fields(status="in_progress"))
other.note(case, "消防大队已到场")
phone.set(case, fields(status="resolved"))
assert other.sync().accepted == 2
report = phone.sync()
assert (report.accepted, report.pulled) == (1, 2), report
assert case in listener.new_records, listener.new_records

# The merged record: both notes, the status conflict with who set each value, the history.
view = phone.get(case)
value = json.loads(view.value_json)
assert sorted(n["text"] for n in value["notes"]) == sorted(["已通知物业当天清理", "消防大队已到场"])
assert value["departments"] == ["fire_brigade", "property_company"], value
conflict = next(c for c in view.conflicts if c.field == "status")
assert sorted(json.loads(v.value_json) for v in conflict.values) == ["in_progress", "resolved"]
assert sorted(v.user for v in conflict.values) == ["bus1", "bus2"], conflict
assert {h.user for h in view.history} == {"bus1", "bus2"}, view.history
assert all(h.state == ChangeState.SYNCED for h in view.history)

# A change the server refuses (a steward may not record a bus session): recorded on a phone
# before anyone signed in, it arrives in the report with its reason, stays in the outbox as
# rejected, and can be discarded. Signed in, the phone refuses the same edit at once.
steward = FieldClient(os.path.join(HOME, "steward1-phone"), URL)
bus_fields = fields(session_type="service_bus", date="2026-11-23", run_number="1801")
bus = steward.create(RecordKind.BUS, ESTATE + "/b3", bus_fields)
steward.login("steward1", PASSWORD)
expect(ApiError.Forbidden, lambda: steward.create(RecordKind.BUS, ESTATE + "/b3", bus_fields))
report = steward.sync()
assert [(r.record, r.retryable) for r in report.rejected] == [(bus, False)], report
assert report.rejected[0].code == RejectCode.FORBIDDEN and report.rejected[0].message
[refused] = steward.outbox()
assert refused.state == OutboxState.REJECTED and refused.reject_code == RejectCode.FORBIDDEN
assert steward.discard(refused.id) == 1
assert steward.outbox() == [] and bus not in [s.id for s in steward.list()]

phone.set_sync_listener(None)
phone.logout()
expect(ApiError.Unauthorized, phone.sync)
print("python smoke test: ok")
