"""What a data steward reads of a study package before approving its plan.

``fedcare site plan STUDY.yaml`` on a study whose model is a package resolves the package the
way the coordinator does at submission (:func:`resolve_for_review`: a signed ``.fcpkg``
archive, verified against the federation CA of the site's kit and added to the site's cache,
or a ``sha256:`` hash already in the cache because a task named it), so the plan hash printed
is the one the site's tasks carry. :func:`review_lines` then shows:

- the package's name, version, hash, task and entry point;
- its signer: researcher id, certificate subject and SHA-256 fingerprint, and (with the site's
  policy) whether ``packages.trusted_signers`` trusts it;
- each declared dependency and whether this installation satisfies it;
- every file with its size and SHA-256;
- a unified diff of its Python files and manifest against the last version of the same package
  name that the steward approved at this site (from the cache; every line is new when there is
  none).

An approval binds the plan hash, and the plan's model spec holds the package hash: a new
package version is a new plan that needs its own approval.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes

from fedcare.errors import ConfigError, PackageError
from fedcare.packages.dependencies import dependency_status
from fedcare.packages.resolve import resolve_package_model
from fedcare.packages.store import hash_hex, hash_ref
from fedcare.packages.verify import read_package
from fedcare.records.package import MANIFEST_FILE
from fedcare.site.approvals import ApprovalStore
from fedcare.site.packages import SitePackages
from fedcare.site.policy import SitePolicy

__all__ = ["previous_approved", "resolve_for_review", "review_lines"]


def resolve_for_review(
    packages: SitePackages, spec: Mapping[str, Any], study_file: Path
) -> dict[str, Any]:
    """The plan's model spec of the package a study file names (see the module docstring).

    Raises
    ------
    PackageError
        The archive does not verify, or a hash that is not in the site's cache.
    ConfigError
        No ``model.package``, a package folder, or no such file.
    """
    ref = spec.get("package")
    if not isinstance(ref, str) or not ref:
        raise ConfigError(f"{study_file}: model.package must name a .fcpkg archive or a hash")
    if ref.startswith("sha256:"):
        if not packages.archive_path(ref).is_file():
            raise PackageError(
                f"package {hash_ref(ref)} is not in this site's cache ({packages.root}): the "
                "agent fetches it when a task of the study arrives; or name the signed "
                ".fcpkg archive the study lead sent you in the study file"
            )
        verified = packages.obtain(ref)
    else:
        path = Path(ref) if Path(ref).is_absolute() else Path(study_file).parent / ref
        if path.is_dir():
            raise ConfigError(
                f"{study_file}: model.package {ref} is a package folder; a site reviews and "
                "runs only signed archives (`fedcare package build`)"
            )
        if not path.is_file():
            raise ConfigError(f"{study_file}: model.package {ref}: no such file ({path})")
        verified = packages.add_archive(path)
    return resolve_package_model({**spec, "package": hash_ref(verified.hash)}, packages.store)


def previous_approved(
    packages: SitePackages, approvals: ApprovalStore, name: str, current: str
) -> tuple[str, Any] | None:
    """The last package named ``name`` (not ``current``) whose plan the steward approved at
    this site and that is still in the cache: (``sha256:<hex>``, its approval row)."""
    rows = sorted(
        (r for r in approvals.list() if r.status == "approved"), key=lambda r: r.decided_at
    )
    for row in reversed(rows):
        ref = packages.package_of_plan(row.plan_hash)
        if ref is None or hash_hex(ref) == hash_hex(current) or not packages.store.has(ref):
            continue
        if packages.store.manifest(ref).name == name:
            return ref, row
    return None


def _reviewed_files(folder: Path | None) -> dict[str, list[str]]:
    if folder is None:
        return {}
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and (path.suffix == ".py" or rel == MANIFEST_FILE):
            out[rel] = path.read_text(encoding="utf-8", errors="replace").splitlines(True)
    return out


def _diff(old: Path | None, new: Path, old_label: str, new_label: str) -> list[str]:
    before, after = _reviewed_files(old), _reviewed_files(new)
    lines: list[str] = []
    for name in sorted(set(before) | set(after)):
        a, b = before.get(name, []), after.get(name, [])
        src = f"{old_label}/{name}" if name in before else "/dev/null"
        dst = f"{new_label}/{name}" if name in after else "/dev/null"
        for line in difflib.unified_diff(a, b, src, dst):
            lines.append(line.rstrip("\n"))
    return lines


def review_lines(
    packages: SitePackages,
    approvals: ApprovalStore,
    ref: str,
    policy: SitePolicy | None = None,
) -> list[str]:
    """What the steward reads of the cached package ``ref`` (see the module docstring)."""
    verified = packages.obtain(ref)
    manifest, signer = verified.manifest, verified.signer
    cert = read_package(packages.archive_path(ref)).certificate
    fingerprint = cert.fingerprint(hashes.SHA256()).hex(":")
    lines = [
        f"package:       {manifest.name} {manifest.version} ({hash_ref(ref)})",
        f"task:          {manifest.task}; entry point {manifest.entry_point}",
        f"signer:        researcher {signer.researcher_id} ({signer.subject}), certificate "
        f"SHA-256 {fingerprint}, valid until {signer.not_after:%Y-%m-%d}",
    ]
    if policy is not None:
        trusted = signer.researcher_id in policy.packages.trusted_signers
        lines.append(
            f"               {'trusted' if trusted else 'NOT trusted'} by this site's policy "
            f"(packages.trusted_signers: {', '.join(policy.packages.trusted_signers) or 'none'})"
        )
    deps = dependency_status(manifest)
    head = "dependencies: "
    for dep in deps:
        state = "satisfied" if dep.ok else "NOT satisfied"
        lines.append(f"{head} {dep.describe()}: {state} here")
        head = " " * len(head)
    if not deps:
        lines.append(f"{head} (none declared)")
    head = "files:        "
    for item in verified.files:
        lines.append(f"{head} {item.path}  {item.size} bytes  sha256 {item.sha256}")
        head = " " * len(head)
    new_label = f"{manifest.name}-{manifest.version}"
    earlier = previous_approved(packages, approvals, manifest.name, ref)
    if earlier is None:
        lines.append(
            f"changes:       no earlier version of {manifest.name} was approved at this site: "
            "every line below is new"
        )
        lines += _diff(None, packages.store.folder(ref), "", new_label)
    else:
        old_ref, row = earlier
        old = packages.store.manifest(old_ref)
        lines.append(
            f"changes:       against {old.name} {old.version} ({old_ref}), approved for study "
            f"{row.study!r} as plan {row.plan_hash} ({row.approval_id})"
        )
        diff = _diff(
            packages.store.folder(old_ref),
            packages.store.folder(ref),
            f"{old.name}-{old.version}",
            new_label,
        )
        lines += diff or ["               (no change to the Python files or the manifest)"]
    return lines
