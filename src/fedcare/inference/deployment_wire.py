"""How a deployment travels to a site: a task of kind ``deploy`` over the existing site channel.

The coordinator sends a :class:`~fedcare.records.messages.Task` whose

- ``study_id`` is the deployment's id (``dep-<hex>``), ``round`` 0, ``kind`` ``deploy``;
- ``arrays["bundle"]`` holds every bundle file, byte for byte, as a ``uint8`` array named by
  the file (the manifest's hashes are over these exact bytes);
- ``plan["deployment"]`` holds the deployment's id, version, site, the bundle's hash
  (``sha256:<hex>`` of its manifest's content list), who asked and when, the coordinator's
  signature and its certificate (PEM, issued by the federation CA).

The signature is ECDSA P-256 over the SHA-256 of :func:`signed_message`: the deployment id,
version, the site it is for and the bundle hash, so a signed deployment cannot be replayed for
another site or another bundle. The site checks the certificate against its kit's CA, the
signature, then every file against the manifest and the manifest against the signed hash.

The site answers with a :class:`~fedcare.records.messages.Reply` of the same kind: no error
and ``info`` ``{"status": "taken", "bundle_sha256", "stored_sha256", "approved_by"}`` when it
kept the model; an error whose kind is one of :data:`ANSWER_KINDS` otherwise.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.x509.oid import NameOID

from fedcare.errors import ValidationError
from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Task

__all__ = [
    "ANSWER_KINDS",
    "AWAITING",
    "DEPLOYMENT_PREFIX",
    "DEPLOY_KIND",
    "REFUSED",
    "bundle_files_of",
    "deployment_task",
    "is_deployment_key",
    "sign_deployment",
    "signed_message",
    "verify_deployment_signature",
]

DEPLOY_KIND = "deploy"
DEPLOYMENT_PREFIX = "dep-"
#: The reply error kinds of a deployment: waiting for the steward, refused by them, or failed
#: (a check did not pass, or the site could not keep the model).
AWAITING, REFUSED = "deployment-awaiting-approval", "deployment-refused"
ANSWER_KINDS = (AWAITING, REFUSED, "deployment-failed", "bundle-invalid", "signature-invalid")
_DOMAIN = b"fedcare-deployment-v1\x00"


def is_deployment_key(key: str) -> bool:
    """True for a task key (``study/round/kind/site``) of a deployment."""
    parts = key.split("/")
    return len(parts) == 4 and parts[0].startswith(DEPLOYMENT_PREFIX) and parts[2] == DEPLOY_KIND


def signed_message(deployment_id: str, version: str, site: str, bundle_sha256: str) -> bytes:
    """What the coordinator signs for one deployment to one site."""
    return _DOMAIN + "\x00".join((deployment_id, version, site, bundle_sha256)).encode()


def _ecdsa() -> ec.ECDSA:
    return ec.ECDSA(utils.Prehashed(hashes.SHA256()))


def sign_deployment(key: ec.EllipticCurvePrivateKey, message: bytes) -> str:
    """The base64 ECDSA signature of ``message`` with the coordinator's kit key."""
    digest = hashlib.sha256(message).digest()
    return base64.b64encode(key.sign(digest, _ecdsa())).decode("ascii")


def verify_deployment_signature(
    ca: x509.Certificate, cert_pem: bytes, message: bytes, signature_b64: str
) -> str:
    """Check that ``cert_pem`` is a coordinator certificate (OU ``coordinator``) issued by
    ``ca`` and that its key signed ``message``; return its subject.

    Raises
    ------
    ValidationError
        ``signature-invalid: ...`` naming what did not hold.
    """
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as err:
        raise ValidationError(f"the signer's certificate cannot be read: {err}") from None
    subject = cert.subject.rfc4514_string()
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise ValidationError(
            f"the signer's certificate ({subject}) was not issued by this federation's CA"
        ) from None
    units = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]
    if units != ["coordinator"]:
        raise ValidationError(
            f"the signer's certificate ({subject}) is not the coordinator's: only the "
            "coordinator deploys models"
        )
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise ValidationError(f"the signer's certificate ({subject}) has no ECDSA key")
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        public.verify(signature, hashlib.sha256(message).digest(), _ecdsa())
    except (InvalidSignature, ValueError):
        raise ValidationError(
            f"the deployment's signature does not verify with the key of {subject}"
        ) from None
    return subject


def deployment_task(site: str, files: Mapping[str, bytes], deployment: Mapping[str, Any]) -> Task:
    """The task that carries ``files`` (a bundle) and ``deployment`` (its signed facts)."""
    arrays = ArrayRecord(
        {name: np.frombuffer(data, dtype=np.uint8).copy() for name, data in files.items()}
    )
    return Task(
        study_id=str(deployment["id"]),
        round=0,
        site_id=site,
        kind=DEPLOY_KIND,  # type: ignore[arg-type]
        arrays={"bundle": arrays},
        plan={"deployment": dict(deployment)},
    )


def bundle_files_of(task: Task) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The bundle files and the deployment facts a ``deploy`` task carries.

    Raises
    ------
    ValidationError
        If the task carries no bundle or no deployment facts.
    """
    record = task.arrays.get("bundle")
    facts = task.plan.get("deployment")
    if record is None or not isinstance(facts, Mapping):
        raise ValidationError(f"task {task.task_id} carries no model bundle or deployment facts")
    files = {}
    for name in record:
        array = np.asarray(record[name])
        if array.dtype != np.uint8 or array.ndim != 1:
            raise ValidationError(f"bundle file {name!r} is not carried as bytes")
        files[name] = array.tobytes()
    return files, dict(facts)
