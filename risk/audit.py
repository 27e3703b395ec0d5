"""The only writer of ``AuditEvent``: every action by every person, agent and the system."""
from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import orjson
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone
from redis.exceptions import RedisError

from core.events import publish_account_event, publish_user_event
from core.redis import async_redis_shared, get_redis
from core.signals import audit_observed
from risk.models import AuditEvent

log = logging.getLogger(__name__)


# orjson options that make it write what ``json.dumps(value, default=str)`` writes: datetimes,
# dates, times and dataclasses go to ``str()`` (orjson would format them itself), non-string keys
# become strings.
_AS_STDLIB = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_NON_STR_KEYS


def _jsonable(value: Any) -> Any:
    """Round-trip through JSON so that Decimals, datetimes, UUIDs and anything else JSON has no
    type for become their ``str()``, and make every string storable (see ``_storable``).

    orjson does the round trip (the standard library's was ~2 % of an order call's CPU) with
    ``_AS_STDLIB``, so the stored values are the ones ``json.dumps(value, default=str)`` gave
    (what this did before), except that a plain ``Enum`` is stored as its value, not its name,
    and a float NaN or infinity as null (PostgreSQL's jsonb refused those). What orjson refuses
    (an integer beyond 64 bits, a string that is not valid UTF-8) goes through the standard
    library."""
    if value is None:
        return None
    try:
        loaded = orjson.loads(orjson.dumps(value, default=str, option=_AS_STDLIB))
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        loaded = json.loads(json.dumps(value, cls=DjangoJSONEncoder, default=str))
    return _storable(loaded)


def _storable(value: Any) -> Any:
    """Replace NUL characters, which PostgreSQL's text and jsonb cannot hold, by the visible
    escape ``\\x00`` in every string of a JSON-like value (keys included), and integers beyond 64
    bits by their digits as a string. Hostile input is audited as it came, minus what the
    database cannot store."""
    if isinstance(value, str):
        return value.replace("\x00", "\\x00") if "\x00" in value else value
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        return str(value)  # JSON encoders and bigint columns stop at 64 bits; the digits are kept
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v) for v in value]
    return value


def audit_record(
    *,
    channel: str,
    action: str,
    outcome: str,
    actor_user=None,
    actor_token=None,
    account=None,
    params: dict | None = None,
    message: str = "",
    result: dict | None = None,
    risk_decision: dict | None = None,
    latency_ms: float | None = None,
    request_id: str = "",
    push: bool = True,
) -> AuditEvent:
    """Append one audit event and return it.

    Args:
        channel: ``risk.models.Channel`` value (mcp, api, dashboard, admin, system).
        action: dotted verb, e.g. ``"order.place"``, ``"mcp.get_ticker"``.
        outcome: ``risk.models.Outcome`` value (ok, rejected, error).
        actor_user / actor_token: who acted (the token when an agent did).
        account: the ``trading.Account`` acted on, if any.
        params: the call's arguments; result: what it returned or the error's ``as_dict()``.
        risk_decision: the risk check's ``as_dict()`` when an order was checked.
        latency_ms: wall time the action took, in ms.
        push: False when the caller pushes the event itself (with others of the same commit,
            ``audit_event_payload``).

    The row is inserted at once, in the caller's transaction when there is one (an order's audit
    row commits with the order). The event is also pushed to the account's dashboard group after
    the transaction commits.
    Also shown to ``core.signals.audit_observed`` (metrics, notification triggers).
    """
    audit_observed({"channel": channel, "action": action, "outcome": outcome, "actor_user": actor_user,
                    "actor_token": actor_token, "account": account, "params": params, "message": message,
                    "result": result, "risk_decision": risk_decision, "latency_ms": latency_ms, "request_id": request_id})
    event = AuditEvent(
        channel=channel,
        action=action,
        outcome=outcome,
        params=_jsonable(params or {}),
        message=_storable(message[:2000]),
        result=_jsonable(result or {}),
        risk_decision=_jsonable(risk_decision),
        latency_ms=latency_ms,
        request_id=request_id,
        actor_user=actor_user if getattr(actor_user, "pk", None) else None,
        actor_token=actor_token,
        account=account,
    )
    event.save()  # an INSERT: AuditEvent rows are append-only
    def payload():  # built when the push is sent, after the commit: the row has its id by then
        return audit_event_payload(event)

    if push and account is not None:
        publish_account_event(account.pk, "activity", payload)
    elif push and event.actor_user_id is not None:  # account-less actions reach the acting user's own dashboard
        publish_user_event(event.actor_user_id, "activity", payload)
    return event


def audit_event_payload(event: AuditEvent) -> dict:
    """The JSON shape of an audit event on the dashboard's activity feed."""
    return {
        "id": event.pk,
        "time": event.created_at.isoformat(),
        "channel": event.channel,
        "action": event.action,
        "outcome": event.outcome,
        "message": event.message,
        "token": event.actor_token.name if event.actor_token_id else None,
        "params": event.params,
        "account": event.account_id,
        "risk": ({"allowed": event.risk_decision.get("allowed"), "reason": event.risk_decision.get("reason", "")}
                 if event.risk_decision else None),
    }


# --- The audit write-ahead log -------------------------------------------------------------------
#
# Reads on the MCP hot path (get_ticker, get_klines, …) must not wait for a database INSERT, yet no
# audit event may be lost. They append to a Redis stream (XADD, ~0.1 ms); ``audit_drain`` moves the
# entries into ``AuditEvent`` rows in batches (a Celery beat task every second) and acknowledges
# them only after the rows are committed, so a crashed drainer's entries are re-read
# (XAUTOCLAIM of entries pending for more than ``AUDIT_CLAIM_IDLE_MS``). If Redis refuses the
# append, the event is written to the database instead. The async append (MCP calls on the event
# loop) is written to Redis before the call answers but its reply is handled after (see
# ``audit_enqueue_async``).

AUDIT_GROUP = "drain"
AUDIT_CLAIM_IDLE_MS = 30_000


def audit_stream_key() -> str:
    from django.conf import settings

    return f"{settings.REDIS_KEY_PREFIX}audit:wal"


def audit_enqueue(**event) -> None:
    """Append one audit event (``audit_record``'s keyword arguments, with ``actor_user``/
    ``actor_token``/``account`` given as objects or ids) to the write-ahead stream."""
    audit_observed(event)
    payload = _wal_payload(event)
    try:
        get_redis().xadd(audit_stream_key(), {"e": payload})
    except Exception:  # Redis down: never lose the event, pay for the INSERT instead
        _write_fallback([payload])


async def audit_enqueue_async(**event) -> None:
    """``audit_enqueue`` for async callers (the MCP hot path), on redis-py's asyncio client.

    Returns once Redis has acknowledged the entry's XADD (it is in the stream, which
    ``audit_drain`` moves to the database exactly once, keyed by the entry's ``uid``). Entries of
    calls that finish on the same event loop iteration share one pipelined round trip (group
    commit, ``_AppendBatch``); each caller still waits for its own entry's acknowledgement. If Redis
    refuses an entry or cannot be reached, that event is written to the database before this
    returns (in a worker thread). So no event is lost unless this process and Redis fail together,
    which also loses what Redis had acknowledged: Redis runs without persistence here. An entry
    whose reply was lost although Redis stored it is written by both routes; both rows carry the
    entry's ``uid`` as ``wal_id``, so the second is refused (``audit_drain``)."""
    import asyncio

    audit_observed(event)

    loop = asyncio.get_running_loop()
    batch = _open_batches.get(loop)
    if batch is None:
        for dead in [lp for lp in _open_batches if lp.is_closed()]:
            _open_batches.pop(dead)
        batch = _open_batches[loop] = _AppendBatch(loop)
    future = batch.add(_wal_payload(event))
    await future


class _AppendBatch:
    """The XADDs queued on one event loop during one iteration, sent in one pipeline by a task
    that runs at the next iteration; each entry's future is resolved once Redis acknowledged it or
    the database fallback wrote it."""

    def __init__(self, loop):
        self.loop = loop
        self.entries: list = []  # (payload, future)
        self.flushing = False

    def add(self, payload: bytes):
        future = self.loop.create_future()
        self.entries.append((payload, future))
        if not self.flushing:
            self.flushing = True
            self.loop.create_task(self.flush())
        return future

    async def flush(self) -> None:
        from asgiref.sync import sync_to_async

        try:
            while self.entries:
                entries, self.entries = self.entries, []
                refused: list = []
                try:
                    pipe = async_redis_shared().pipeline(transaction=False)
                    for payload, _ in entries:
                        pipe.xadd(audit_stream_key(), {"e": payload})
                    replies = await pipe.execute(raise_on_error=False)
                    refused = [e for e, reply in zip(entries, replies) if isinstance(reply, Exception)]
                except RedisError as exc:  # Redis down: never lose the events, pay for the INSERTs instead
                    log.warning("audit write-ahead append failed (%s): writing %d events to the database", exc, len(entries))
                    refused = entries
                if refused:
                    try:
                        await sync_to_async(_write_fallback)([payload for payload, _ in refused])
                    except Exception as exc:  # neither Redis nor the database took them: the callers hear it
                        for _, future in refused:
                            if not future.done():
                                future.set_exception(exc)
                for _, future in entries:
                    if not future.done():
                        future.set_result(None)
        finally:
            self.flushing = False


_open_batches: dict = {}  # event loop → its _AppendBatch


def _write_fallback(payloads: list[bytes]) -> None:
    """Write write-ahead ``payloads`` straight to ``AuditEvent`` (Redis refused them); one already
    written by the drainer (same ``uid``) is skipped."""
    records = [_loads(p) for p in payloads]
    _write_records(records, [r.get("uid") for r in records], ignore_conflicts=True)


def _loads(payload: bytes):
    return orjson.loads(payload)


def _wal_payload(event: dict) -> bytes:
    """One write-ahead entry (JSON) of an ``audit_enqueue`` event."""
    record = {
        "uid": uuid.uuid4().hex,  # the row's wal_id: written once whichever route writes it
        "created_at": timezone.now().isoformat(),
        "actor_user_id": _pk(event.pop("actor_user", None)),
        "actor_token_id": _pk(event.pop("actor_token", None)),
        "account_id": _pk(event.pop("account", None)),
        **event,
    }
    # orjson writes dicts, lists, str, numbers and datetimes natively; Decimals and other values
    # go through Django's encoder (Decimal → "0.001"), as in ``audit_record``.
    try:
        return orjson.dumps(record, default=_json_default)
    except TypeError:  # an integer beyond 64 bits (hostile input): store its digits
        return orjson.dumps(_storable(record), default=_json_default)


_encoder = DjangoJSONEncoder()


def _json_default(value):
    try:
        return _encoder.default(value)
    except TypeError:
        return str(value)


def _pk(obj):
    if obj is None or isinstance(obj, int):
        return obj
    return getattr(obj, "pk", None)


def _write_records(records: list[dict], wal_ids: list[str | None] | None = None, *,
                   ignore_conflicts: bool = False) -> list[AuditEvent]:
    """Insert one ``AuditEvent`` per write-ahead record (``wal_ids``: their entry ids, in the same
    order, stored in ``AuditEvent.wal_id``; ``ignore_conflicts``: skip a record whose ``wal_id``
    is already a row's)."""
    from datetime import datetime

    records = [_storable(r) for r in records]
    wal_ids = wal_ids or [None] * len(records)
    events = [
        AuditEvent(
            wal_id=wal_id,
            created_at=datetime.fromisoformat(r["created_at"]),
            actor_user_id=r.get("actor_user_id"),
            actor_token_id=r.get("actor_token_id"),
            account_id=r.get("account_id"),
            channel=r["channel"],
            action=r["action"],
            outcome=r["outcome"],
            params=r.get("params") or {},
            message=(r.get("message") or "")[:2000],
            result=r.get("result") or {},
            risk_decision=r.get("risk_decision"),
            latency_ms=r.get("latency_ms"),
            request_id=r.get("request_id") or "",
        )
        for r, wal_id in zip(records, wal_ids)
    ]
    return AuditEvent.objects.bulk_create(events, ignore_conflicts=ignore_conflicts)


def audit_drain(*, batch: int = 1000, consumer: str = "drainer") -> int:
    """Move pending write-ahead entries into ``AuditEvent`` rows; return how many were written.

    Entries are acknowledged (XACK + XDEL) only after their rows are committed; entries another
    consumer left pending for over 30 s are claimed and written too. An entry already written (its
    stream id is some row's ``wal_id``: the drainer that wrote it died before acknowledging it, or
    two drainers claimed it) is acknowledged without a second row; the unique ``wal_id`` refuses a
    duplicate even when two drainers race, and the loser's entries are settled on its next run.
    """
    import redis as redis_lib
    from django.db import transaction

    r = get_redis()
    key = audit_stream_key()
    try:
        r.xgroup_create(key, AUDIT_GROUP, id="0", mkstream=True)
    except redis_lib.ResponseError:
        pass  # BUSYGROUP: exists already
    total = 0
    while True:
        entries = []
        claimed = r.xautoclaim(key, AUDIT_GROUP, consumer, AUDIT_CLAIM_IDLE_MS, start_id="0-0", count=batch)
        entries.extend(claimed[1] if claimed else [])
        read = r.xreadgroup(AUDIT_GROUP, consumer, {key: ">"}, count=batch)
        for _, items in read or []:
            entries.extend(items)
        entries = [(eid, fields) for eid, fields in entries if fields]
        if not entries:
            return total
        ids = [eid for eid, _ in entries]
        records = [orjson.loads(fields[b"e"]) for _, fields in entries]
        # An entry's row is keyed by its uid (older entries: by the stream id), so an event the
        # enqueuer also wrote to the database itself (``audit_enqueue_async``'s fallback) gets no second row.
        wal_ids = [r.get("uid") or (eid.decode() if isinstance(eid, bytes) else str(eid)) for r, eid in zip(records, ids)]
        with transaction.atomic():
            done = set(AuditEvent.objects.filter(wal_id__in=wal_ids).values_list("wal_id", flat=True))
            todo = [(w, r) for w, r in zip(wal_ids, records) if w not in done]
            events = _write_records([r for _, r in todo], [w for w, _ in todo])
        r.xack(key, AUDIT_GROUP, *ids)
        r.xdel(key, *ids)
        total += len(events)
        for event in events:
            if event.account_id is not None:
                publish_account_event(event.account_id, "activity", audit_event_payload(event))
            elif event.actor_user_id is not None:
                publish_user_event(event.actor_user_id, "activity", audit_event_payload(event))
