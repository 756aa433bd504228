"""Homomorphic encryption of model updates (privacy mode ``encrypted``): CKKS via TenSEAL.

TenSEAL is the optional extra ``he``; importing this package works without it, and using the
CKKS backend then raises a :class:`~fedcare.errors.ConfigError` that says how to install it.
"""

from fedcare.secure.he.base import HEBackend
from fedcare.secure.he.ckks import CKKSBackend, error_bound
from fedcare.secure.he.keys import HE_PUBLIC_FILE, HE_SECRET_FILE, coordinator_context, site_context
from fedcare.secure.he.layer import EncryptedSum, EncryptedSumServer, with_encrypted_sum

__all__ = [
    "HE_PUBLIC_FILE",
    "HE_SECRET_FILE",
    "CKKSBackend",
    "EncryptedSum",
    "EncryptedSumServer",
    "HEBackend",
    "coordinator_context",
    "error_bound",
    "site_context",
    "with_encrypted_sum",
]
