"""Study packages: a researcher's model code, built reproducibly, signed, verified.

- :mod:`fedcare.records.package`: the manifest (``fedcare-package.yaml``), plain data;
- :mod:`fedcare.packages.archive`: :func:`build_package`, the deterministic signed archive;
- :mod:`fedcare.packages.signing`: ECDSA P-256 signatures and the researcher identity;
- :mod:`fedcare.packages.verify`: :func:`read_package`, :func:`verify_package`.

Loading and running a package's code, distributing it to sites and a steward's review are
built on these (issue 13, later items); this package never imports or runs package code.
"""

from fedcare.packages.archive import BuiltPackage, build_package
from fedcare.packages.signing import Signer
from fedcare.packages.verify import (
    PackageContents,
    PackageFile,
    VerifiedPackage,
    read_package,
    verify_package,
)

__all__ = [
    "BuiltPackage",
    "PackageContents",
    "PackageFile",
    "Signer",
    "VerifiedPackage",
    "build_package",
    "read_package",
    "verify_package",
]
