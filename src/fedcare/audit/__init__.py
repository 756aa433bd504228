"""Tamper-evident audit logs: hash-chained, signed, append-only entries; verify and export.

::

    from fedcare.audit import AuditLog, verify_log, export_log

    log = AuditLog.open(path, key_path=kit / "key.pem", actor="cleveland")
    entry = log.append("task-received", task_id="t1", round=3)   # -> AuditEntry
    log.head()                                                   # hash of the newest entry
    str(log.checkpoint())                                        # "seq:hash", for a witness
    result = verify_log(path, cert_path=kit / "cert.pem")        # VerifyResult(ok, count, ...)
    export_log(path, out_path, cert_path=kit / "cert.pem")       # JSON lines

:class:`LogVerifier` re-verifies a growing log cheaply (it remembers checked lines). See
:mod:`fedcare.audit.log` for the format and what it does and does not protect against.
"""

from fedcare.audit.entry import AuditEntry
from fedcare.audit.export import ExportResult, export_log
from fedcare.audit.head import Checkpoint
from fedcare.audit.log import AuditLog
from fedcare.audit.verify import LogVerifier, VerifyResult, verify_bytes, verify_log

__all__ = [
    "AuditEntry",
    "AuditLog",
    "Checkpoint",
    "ExportResult",
    "LogVerifier",
    "VerifyResult",
    "export_log",
    "verify_bytes",
    "verify_log",
]
