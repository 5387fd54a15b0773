"""The deployment bundle: one folder of artifacts plus `manifest.json` that vouches for them.

Every file is written atomically (temp file in the same folder, fsync, rename), so an interrupted run never leaves
a half-written artifact under its final name. The manifest records each artifact's sha256 and the hash of the
inputs that produced it, so a re-run with the same inputs reuses valid artifacts instead of re-exporting, and an
artifact changed behind the manifest's back is detected.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ArtifactError, ConfigError

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = 1


# --------------------------------------------------------------------------------------------- files
def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)`, then move the finished file onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
    return path


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def atomic_write_json(path: Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def ensure_writable_dir(path: Path) -> Path:
    """Create `path` if needed and prove it is writable, with one clear line when it is not."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe-", delete=True)
        probe.close()
    except OSError as e:
        raise ConfigError(f"work dir {path} is not writable ({e.strerror}); choose another with --work-dir") from None
    return path


# --------------------------------------------------------------------------------------------- provenance
def library_versions() -> dict[str, str | None]:
    """Versions of what produced and checked the artifacts (None: not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("awml_deploy_core", "torch", "onnx", "onnxruntime", "onnxslim", "numpy", "tensorrt", "polygraphy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the source tree this package runs from, or None outside a git checkout."""
    where = Path(path or __file__).resolve().parent
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode != 0:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                           capture_output=True, text=True, timeout=5).stdout.strip()
    return res.stdout.strip() + ("-dirty" if dirty else "")


# --------------------------------------------------------------------------------------------- bundle
@dataclass
class Bundle:
    """A bundle folder and its manifest, loaded (or empty when new)."""

    root: Path
    manifest: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, root: str | Path) -> "Bundle":
        root = Path(root)
        path = root / MANIFEST
        manifest: dict[str, Any] = {"schema": MANIFEST_SCHEMA, "artifacts": {}}
        if path.exists():
            try:
                manifest = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ArtifactError(f"{path}: manifest is not valid JSON ({e}); delete it to start over") from None
            if not isinstance(manifest.get("artifacts"), dict):
                raise ArtifactError(f"{path}: manifest has no 'artifacts' mapping; delete it to start over")
        return cls(root, manifest)

    @property
    def artifacts(self) -> dict[str, dict[str, Any]]:
        return self.manifest.setdefault("artifacts", {})

    def path(self, name: str) -> Path:
        entry = self.artifacts.get(name)
        if entry is None:
            raise ArtifactError(f"bundle {self.root}: no artifact '{name}' in {MANIFEST}; run export first")
        return self.root / entry["file"]

    def verify(self, name: str) -> Path:
        """The artifact's path, after checking that it exists and still has the recorded sha256."""
        path = self.path(name)
        if not path.exists():
            raise ArtifactError(f"bundle {self.root}: artifact '{name}' ({path.name}) is missing; re-run export")
        actual = sha256_file(path)
        recorded = self.artifacts[name]["sha256"]
        if actual != recorded:
            raise ArtifactError(
                f"bundle {self.root}: {path.name} does not match its manifest hash "
                f"(manifest {recorded[:12]}, file {actual[:12]}); it changed after export: re-run export "
                f"(export.mode onnx) to rebuild it"
            )
        return path

    def reusable(self, name: str, inputs_hash: str) -> bool:
        """True when the artifact was made from the same inputs and is intact on disk."""
        entry = self.artifacts.get(name)
        if not entry or entry.get("inputs_hash") != inputs_hash:
            return False
        path = self.root / entry["file"]
        return path.exists() and sha256_file(path) == entry.get("sha256")

    def record(self, name: str, path: Path, inputs_hash: str, **info: Any) -> None:
        path = Path(path)
        self.artifacts[name] = {
            "file": str(path.relative_to(self.root)),
            "sha256": sha256_file(path),
            "bytes": path.stat().st_size,
            "inputs_hash": inputs_hash,
            **info,
        }

    def save(self, **sections: Any) -> Path:
        """Write the manifest atomically, with provenance refreshed."""
        self.manifest.update(sections)
        self.manifest["schema"] = MANIFEST_SCHEMA
        self.manifest["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.manifest["versions"] = library_versions()
        self.manifest["git_commit"] = git_commit()
        return atomic_write_json(self.root / MANIFEST, self.manifest)
