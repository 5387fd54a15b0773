"""The export job's bad-input paths: each fails with one clear line and loses nothing already written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from awml_deploy_core.bundle import Bundle
from awml_deploy_core.config import DataConfig, DeployConfig, EvaluateConfig, VerifyConfig
from awml_deploy_core.deploy import run_deploy
from awml_deploy_core.errors import ArtifactError, BackendUnavailableError, CheckpointError, ConfigError, DatasetError
from awml_deploy_core.models.centerpoint import build_centerpoint
from awml_deploy_core.models.checkpoint import save_checkpoint

AWML = Path(sys.executable).parent / "awml-deploy"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A real (untrained, fixed-seed) checkpoint: the error paths don't need accuracy."""
    import torch

    torch.manual_seed(0)
    cfg = DeployConfig().model
    path = tmp_path_factory.mktemp("ckpt") / "model.pth"
    save_checkpoint(build_centerpoint(cfg), cfg, path, {"note": "test"})
    return path


def small_config(work: Path, checkpoint: Path, **kw) -> DeployConfig:
    base = {"checkpoint": str(checkpoint), "work_dir": str(work), "data": DataConfig(num_frames=2),
            "verify": VerifyConfig(num_samples=1), "evaluate": EvaluateConfig(warmup=0)}
    return DeployConfig(**{**base, **kw})


def test_small_job_writes_bundle_and_reuses_it(tmp_path, checkpoint):
    cfg = small_config(tmp_path / "b", checkpoint)
    assert run_deploy(cfg, progress=False) == 0
    bundle = Bundle.open(tmp_path / "b")
    assert {"encoder", "head"} <= set(bundle.artifacts)
    for name in ("encoder", "head"):
        bundle.verify(name)
    assert (tmp_path / "b" / "report.json").exists() and (tmp_path / "b" / "report.md").exists()
    assert (tmp_path / "b" / "plots" / "latency.png").stat().st_size > 0
    mtime = bundle.path("encoder").stat().st_mtime_ns
    assert run_deploy(cfg, progress=False) == 0
    assert Bundle.open(tmp_path / "b").path("encoder").stat().st_mtime_ns == mtime, "valid artifact was re-exported"
    m = Bundle.open(tmp_path / "b").manifest
    assert m["checkpoint"]["sha256"] and m["dataset"]["fingerprint"] and m["versions"]["torch"]
    assert not list((tmp_path / "b").glob(".*.tmp")), "temp files left behind"


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        run_deploy(small_config(tmp_path / "w", tmp_path / "nope.pth"), progress=False)


def test_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x80\x02 definitely not a checkpoint")
    with pytest.raises(CheckpointError) as info:
        run_deploy(small_config(tmp_path / "w", bad), progress=False)
    assert "bad.pth" in str(info.value) and "\n" not in str(info.value)


def test_bundle_hash_mismatch(tmp_path, checkpoint):
    work = tmp_path / "b"
    assert run_deploy(small_config(work, checkpoint), progress=False) == 0
    head = Bundle.open(work).path("head")
    head.write_bytes(head.read_bytes() + b"tampered")
    with pytest.raises(ArtifactError, match="does not match its manifest hash"):
        run_deploy(small_config(work, checkpoint, export={"mode": "none"}), progress=False)
    # mode onnx re-exports over it and records the new hash
    assert run_deploy(small_config(work, checkpoint), progress=False) == 0
    Bundle.open(work).verify("head")


def test_corrupt_onnx_file(tmp_path, checkpoint):
    src = tmp_path / "onnx"
    src.mkdir()
    name = DeployConfig().model.name
    (src / f"pts_voxel_encoder_{name}.onnx").write_bytes(b"not an onnx file")
    (src / f"pts_backbone_neck_head_{name}.onnx").write_bytes(b"not an onnx file either")
    with pytest.raises(ArtifactError, match="not a valid ONNX model") as info:
        run_deploy(small_config(tmp_path / "w", checkpoint, export={"mode": "none", "onnx_source": str(src)}),
                   progress=False)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; the unwritable case needs a normal user")
def test_unwritable_work_dir_as_user(tmp_path, checkpoint):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(ConfigError, match="not writable"):
        run_deploy(small_config(locked / "w", checkpoint), progress=False)


def test_unwritable_work_dir(tmp_path, checkpoint):
    # A regular file where a folder is needed: unwritable for root too.
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="not writable"):
        run_deploy(small_config(blocker / "w", checkpoint), progress=False)


def test_tensorrt_missing(tmp_path, checkpoint):
    pytest.importorskip  # noqa: B018 - documentation: this test is for machines WITHOUT tensorrt
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tensorrt is installed here: the missing-TensorRT message cannot be shown")
    cfg = small_config(tmp_path / "w", checkpoint, device="cpu", export={"mode": "both"},
                       evaluate=EvaluateConfig(backends=["pytorch", "onnxruntime"], warmup=0))
    with pytest.raises(BackendUnavailableError) as info:
        run_deploy(cfg, progress=False)
    assert "tensorrt" in str(info.value) and "not importable" in str(info.value)


def test_zero_frames(tmp_path, checkpoint):
    with pytest.raises(DatasetError, match="no frames"):
        run_deploy(small_config(tmp_path / "w", checkpoint, data=DataConfig(num_frames=0)), progress=False)


def test_cli_runtime_errors_exit_3_one_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"checkpoint: {tmp_path / 'missing.pth'}\nwork_dir: {tmp_path / 'w'}\n")
    res = subprocess.run([str(AWML), "export", str(cfg)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 3, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines == [f"error: {tmp_path / 'missing.pth'}: checkpoint not found (config key 'checkpoint')"]
