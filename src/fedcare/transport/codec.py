"""Tasks, replies and array records to and from bytes, and bytes to and from chunks.

Pure functions, no sockets. The bytes are the protobuf messages of ``grpc/fedcare.proto``
(``TaskMessage``, ``ReplyMessage``, ``ArraysMessage``); arrays travel as raw little-endian
bytes with a dtype name from a fixed allow-list and a shape. There is no pickle anywhere.

Decoding checks everything against :class:`Limits` *before* it builds a record or a message
object, and every failure is a :class:`~fedcare.errors.ValidationError` naming the field and
the bad value: bytes that are not a protobuf message, a truncated message (each message ends
with a fixed marker, written last), an unknown message version, a dtype outside the allow-list,
data whose length is not ``prod(shape) * itemsize``, too many arrays or dimensions, an
oversized payload, an unknown task kind, a negative round or sample count.

:func:`chunk` and :func:`assemble` (from :mod:`fedcare.transport.chunks`) and the array-record
functions and :class:`Limits` (from :mod:`fedcare.transport.arrays_wire`) are re-exported here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from fedcare.errors import ValidationError
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import TASK_KINDS, Reply, ReplyError, Task
from fedcare.transport.arrays_wire import (
    ALLOWED_DTYPES,
    DEFAULT_LIMITS,
    END_MARKER,
    Limits,
    _check_name,
    _check_size,
    _count_arrays,
    _parse,
    _record_from_proto,
    _record_to_proto,
    _serialize,
    decode_arrays,
    encode_arrays,
)
from fedcare.transport.chunks import DEFAULT_CHUNK_SIZE, assemble, chunk, new_transfer_id
from fedcare.transport.grpc import fedcare_pb2 as pb

__all__ = [
    "ALLOWED_DTYPES",
    "DEFAULT_CHUNK_SIZE",
    "END_MARKER",
    "Limits",
    "assemble",
    "chunk",
    "decode_arrays",
    "decode_reply",
    "decode_task",
    "encode_arrays",
    "encode_reply",
    "encode_task",
    "new_transfer_id",
]


_INT64 = (-(1 << 63), (1 << 63) - 1)
#: Writes an :class:`ArrayRecord` into an ``ArrayRecord`` message.
RecordWriter = Callable[[ArrayRecord, pb.ArrayRecord], None]
#: Reads an ``ArrayRecord`` message (limits, where for errors) into an :class:`ArrayRecord`.
RecordReader = Callable[[pb.ArrayRecord, Limits, str], ArrayRecord]


def _to_json(value: Mapping[str, Any], what: str) -> str:
    try:
        return json.dumps(dict(value), allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as err:
        raise ValidationError(f"{what} is not JSON-serializable: {err}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _from_json(text: str, what: str, limits: Limits) -> dict[str, Any]:
    if not text:
        return {}
    if len(text) > limits.max_json_chars:
        raise ValidationError(
            f"{what} has {len(text)} characters, above the limit {limits.max_json_chars}"
        )
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as err:
        raise ValidationError(f"{what} is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise ValidationError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _check_header(msg: Any, what: str, limits: Limits) -> None:
    _check_name(msg.study_id, f"{what} study_id", limits)
    _check_name(msg.site_id, f"{what} site_id", limits)
    if msg.kind not in TASK_KINDS:
        raise ValidationError(f"{what} has kind {msg.kind!r}; expected one of {TASK_KINDS}")
    if msg.round < 0:
        raise ValidationError(f"{what} has round {msg.round}; expected a non-negative int")


# Tasks ----------------------------------------------------------------------------------------
def _config_to_proto(key: str, value: Any, out: pb.ConfigValue) -> None:
    if isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise ValidationError(f"task config[{key!r}] = {value} does not fit in int64")
        out.int_value = value
    elif isinstance(value, float):
        out.double_value = value
    elif isinstance(value, str):
        out.string_value = value
    else:
        raise ValidationError(f"task config[{key!r}] has unsupported type {type(value).__name__}")


def encode_task(task: Task) -> bytes:
    """Serialize a :class:`Task` as a ``TaskMessage``."""
    _check_size([task.params, *task.arrays.values()], f"task {task.task_id}")
    return _serialize(task_message(task, _record_to_proto), f"task {task.task_id}")


def task_message(task: Task, record_to_proto: RecordWriter) -> pb.TaskMessage:
    """The ``TaskMessage`` of ``task``, its array records written by ``record_to_proto``
    (with their bytes inline, or only names, dtypes and shapes: :mod:`~.framed`)."""
    msg = pb.TaskMessage(
        version=task.version,
        study_id=task.study_id,
        round=task.round,
        site_id=task.site_id,
        kind=task.kind,
        plan_json=_to_json(task.plan, "task plan"),
        pipeline_json=_to_json(task.pipeline, "task pipeline"),
        submission=task.submission,
        end=END_MARKER,
    )
    record_to_proto(task.params, msg.params)
    for key, value in task.config.items():
        _config_to_proto(key, value, msg.config[key])
    for name, record in task.arrays.items():
        named = msg.arrays.add(name=name)
        record_to_proto(record, named.record)
    return msg


def _config_from_proto(msg: pb.TaskMessage, limits: Limits) -> dict[str, Any]:
    if len(msg.config) > limits.max_entries:
        raise ValidationError(
            f"task has {len(msg.config)} config entries, above the limit {limits.max_entries}"
        )
    config: dict[str, Any] = {}
    for key, value in msg.config.items():
        _check_name(key, "task config key", limits)
        which = value.WhichOneof("value")
        if which is None:
            raise ValidationError(f"task config[{key!r}] has no value")
        config[key] = getattr(value, which)
    return config


def decode_task(data: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Task:
    """Parse and validate the output of :func:`encode_task`.

    Raises
    ------
    ValidationError
        If the bytes are malformed, truncated, of another version or break ``limits``.
    """
    msg = _parse(pb.TaskMessage, data, "task message", limits)
    return task_from_message(msg, limits, _record_from_proto)


def task_from_message(msg: pb.TaskMessage, limits: Limits, record_from_proto: RecordReader) -> Task:
    """Check a parsed ``TaskMessage`` and build its :class:`Task`, its array records read by
    ``record_from_proto`` (from the message, or from the body of a framed payload)."""
    _check_header(msg, "task message", limits)
    if len(msg.arrays) > limits.max_records:
        raise ValidationError(
            f"task has {len(msg.arrays)} extra records, above the limit {limits.max_records}"
        )
    _count_arrays([msg.params, *(n.record for n in msg.arrays)], limits, "task")
    where = f"task {msg.study_id}/{msg.round}/{msg.kind}/{msg.site_id}"
    params = record_from_proto(msg.params, limits, f"{where} params")  # first: framed order
    extra: dict[str, ArrayRecord] = {}
    for named in msg.arrays:
        _check_name(named.name, f"{where} record name", limits)
        if named.name in extra:
            raise ValidationError(f"{where} has two records named {named.name!r}")
        extra[named.name] = record_from_proto(named.record, limits, f"{where} {named.name}")
    return Task(
        study_id=msg.study_id,
        round=int(msg.round),
        site_id=msg.site_id,
        kind=msg.kind,  # type: ignore[arg-type]  # checked against TASK_KINDS above
        params=params,
        config=_config_from_proto(msg, limits),
        arrays=extra,
        plan=_from_json(msg.plan_json, f"{where} plan", limits),
        pipeline=_from_json(msg.pipeline_json, f"{where} pipeline", limits),
        version=msg.version,
        submission=int(msg.submission),
    )


# Replies --------------------------------------------------------------------------------------
def encode_reply(reply: Reply) -> bytes:
    """Serialize a :class:`Reply` as a ``ReplyMessage``."""
    _check_size([reply.arrays], f"reply from site {reply.site_id!r}")
    return _serialize(reply_message(reply, _record_to_proto), f"reply from site {reply.site_id!r}")


def reply_message(reply: Reply, record_to_proto: RecordWriter) -> pb.ReplyMessage:
    """The ``ReplyMessage`` of ``reply``, its arrays written by ``record_to_proto``."""
    msg = pb.ReplyMessage(
        version=reply.version,
        study_id=reply.study_id,
        round=reply.round,
        site_id=reply.site_id,
        kind=reply.kind,
        num_samples=reply.num_samples,
        metrics=dict(reply.metrics),
        info=dict(reply.info),
        submission=reply.submission,
        end=END_MARKER,
    )
    record_to_proto(reply.arrays, msg.arrays)
    if reply.error is not None:
        msg.error.kind = reply.error.kind
        msg.error.message = reply.error.message
    return msg


def decode_reply(data: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Reply:
    """Parse and validate the output of :func:`encode_reply`.

    The caller still checks that the reply answers a task it sent, and that ``site_id`` is the
    sender's certified identity.

    Raises
    ------
    ValidationError
        If the bytes are malformed, truncated, of another version or break ``limits``.
    """
    msg = _parse(pb.ReplyMessage, data, "reply message", limits)
    return reply_from_message(msg, limits, _record_from_proto)


def reply_from_message(
    msg: pb.ReplyMessage, limits: Limits, record_from_proto: RecordReader
) -> Reply:
    """Check a parsed ``ReplyMessage`` and build its :class:`Reply` (arrays read by
    ``record_from_proto``)."""
    _check_header(msg, "reply message", limits)
    where = f"reply from site {msg.site_id!r} for {msg.study_id}/{msg.round}/{msg.kind}"
    if msg.num_samples < 0:
        raise ValidationError(f"{where} has num_samples={msg.num_samples}; expected >= 0")
    if len(msg.metrics) > limits.max_entries:
        raise ValidationError(
            f"{where} has {len(msg.metrics)} metrics, above the limit {limits.max_entries}"
        )
    for key in msg.metrics:
        _check_name(key, f"{where} metric name", limits)
    if len(msg.info) > limits.max_entries:
        raise ValidationError(
            f"{where} has {len(msg.info)} info entries, above the limit {limits.max_entries}"
        )
    for key, value in msg.info.items():
        _check_name(key, f"{where} info name", limits)
        if len(value) > limits.max_json_chars:
            raise ValidationError(f"{where}: info {key!r} is longer than the limit")
    error = None
    if msg.HasField("error"):
        _check_name(msg.error.kind, f"{where} error kind", limits)
        error = ReplyError(kind=msg.error.kind, message=msg.error.message)
    _count_arrays([msg.arrays], limits, where)
    return Reply(
        study_id=msg.study_id,
        round=int(msg.round),
        site_id=msg.site_id,
        kind=msg.kind,  # type: ignore[arg-type]  # checked against TASK_KINDS above
        arrays=record_from_proto(msg.arrays, limits, where),
        num_samples=int(msg.num_samples),
        metrics=dict(msg.metrics),
        error=error,
        version=msg.version,
        info=dict(msg.info),
        submission=int(msg.submission),
    )
