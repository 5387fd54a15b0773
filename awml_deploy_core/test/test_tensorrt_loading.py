"""Loading TensorRT engines from a bundle: our plumbing only, with a stand-in engine runner (no TensorRT, no GPU).

The bundle holds real ONNX graphs (the small CenterPoint, random weights) and fake engine files recorded in the
manifest by the same code ``tensorrt_build`` records real ones with (``record_engine``). The loader must find the
bundle's engines, check their cache key against the given TensorRT environment, and name the reason on a mismatch.
Where TensorRT is absent, every entry point says so in the one line ``import_tensorrt`` raises.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch

from awml_deploy_core.backends.base import GraphRunner
from awml_deploy_core.bundle import Bundle, sha256_file
from awml_deploy_core.config import DeployConfig, ExportConfig
from awml_deploy_core.errors import ArtifactError, BackendUnavailableError
from awml_deploy_core.export.tensorrt_plan import TrtEnvironment, build_plan, engine_artifact, record_engine
from awml_deploy_core.families import get_family
from awml_deploy_core.loader import export_graphs, load_pipeline
from awml_deploy_core.models.centerpoint import build_centerpoint

ROOT = Path(__file__).resolve().parents[2]
AWML = Path(sys.executable).parent / "awml-deploy"
H200 = TrtEnvironment("10.3.0", "NVIDIA H200", "9.0")


class StandInEngineRunner(GraphRunner):
    """Records which engine file the loader gave it; never runs."""

    def __init__(self, path: Path, spec, device: str) -> None:
        self.path, self.spec, self.device = Path(path), spec, device
        self.name = f"stand-in:{spec.name}"
        self.inputs, self.output_names = spec.inputs, spec.output_names


class StandInFactory:
    def __init__(self) -> None:
        self.made: dict[str, StandInEngineRunner] = {}

    def __call__(self, path: Path, spec, device: str) -> GraphRunner:
        runner = StandInEngineRunner(path, spec, device)
        self.made[spec.key] = runner
        return runner


def _make_bundle(root: Path) -> DeployConfig:
    """A bundle as `awml-deploy export --mode both` leaves it: ONNX recorded by the export code, engines recorded
    by the builder's recording code (the engine bytes are fake: nothing here runs them)."""
    cfg = DeployConfig(work_dir=str(root), export=ExportConfig(mode="both", simplify=False))
    family = get_family(cfg.family)
    torch.manual_seed(0)
    bundle = Bundle.open(root)
    export_graphs(family, cfg, build_centerpoint(cfg.model).eval(), bundle, "0" * 64)
    plan = build_plan(cfg, bundle, env=H200)
    for g in plan.graphs.values():
        g.engine.write_bytes(f"stand-in engine for {g.key}".encode())
        record_engine(bundle, g)
    bundle.save(config=cfg.model_dump(mode="json"))
    return cfg


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bundle")
    _make_bundle(root)
    return root


def _load(root: Path, env: TrtEnvironment) -> StandInFactory:
    factory = StandInFactory()
    loaded = load_pipeline(root, "tensorrt", "cuda", engine_runner=factory, trt_env=env)
    loaded.close()
    return factory


def test_the_bundles_engines_are_found_and_their_key_checked(bundle_dir):
    factory = _load(bundle_dir, H200)
    bundle = Bundle.open(bundle_dir)
    assert set(factory.made) == {"encoder", "head"}
    for key, runner in factory.made.items():
        entry = bundle.artifacts[engine_artifact(key)]
        assert runner.path == bundle_dir / entry["file"]
        assert runner.path.name == Path(bundle.artifacts[key]["file"]).with_suffix(".engine").name
        assert entry["cache_key"]["trt_version"] == "10.3.0" and entry["cache_key"]["gpu_name"] == "NVIDIA H200"
        assert entry["cache_key"]["onnx_sha256"] == sha256_file(bundle.path(key))
    assert factory.made["encoder"].spec.rows_independent and not factory.made["head"].spec.rows_independent
    assert all(r.closed for r in factory.made.values())  # the pipeline's close() released them


def test_other_tensorrt_version_names_the_reason(bundle_dir):
    with pytest.raises(ArtifactError, match="built by TensorRT 10.3.0, this is TensorRT 8.6.1"):
        _load(bundle_dir, TrtEnvironment("8.6.1", "NVIDIA H200", "9.0"))


def test_other_gpu_names_the_reason(bundle_dir):
    with pytest.raises(ArtifactError, match=r"built for NVIDIA H200 \(compute capability 9.0\), this GPU is Orin"):
        _load(bundle_dir, TrtEnvironment("10.3.0", "Orin", "8.7"))


def _flip_one_weight_byte(path: Path) -> None:
    """Change one byte inside a weight tensor: the file stays a valid ONNX graph with other bytes."""
    model = onnx.load(str(path))
    raw = next(i.raw_data for i in model.graph.initializer if len(i.raw_data) >= 64)
    data = bytearray(path.read_bytes())
    at = bytes(data).index(raw[:64]) + 8
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    onnx.load(str(path))  # still parses


def test_changed_onnx_names_the_change(tmp_path):
    cfg = _make_bundle(tmp_path)
    bundle = Bundle.open(tmp_path)
    onnx_path = bundle.path("encoder")
    old = sha256_file(onnx_path)
    _flip_one_weight_byte(onnx_path)
    new = sha256_file(onnx_path)
    # The ONNX no longer matches the manifest: the bundle's own hash check names the file.
    with pytest.raises(ArtifactError, match=f"{onnx_path.name} does not match its manifest hash"):
        _load(tmp_path, H200)
    # Re-recorded (as a re-export would), the engine's cache key names the ONNX change.
    bundle.record("encoder", onnx_path, bundle.artifacts["encoder"]["inputs_hash"], kind="onnx")
    bundle.save(config=cfg.model_dump(mode="json"))
    with pytest.raises(ArtifactError, match=rf"encoder engine does not fit here: the ONNX changed \(sha256 "
                                            rf"{old[:12]} -> {new[:12]}\)"):
        _load(tmp_path, H200)


# --------------------------------------------------------------------------------------------- TensorRT absent
@pytest.fixture(scope="module")
def missing_message() -> str:
    from awml_deploy_core.backends.tensorrt_backend import import_tensorrt

    try:
        import_tensorrt()
    except BackendUnavailableError as e:
        return str(e)
    pytest.skip("tensorrt imports here: the missing-TensorRT line cannot be shown")


def test_loader_says_tensorrt_is_missing_in_the_one_line(bundle_dir, missing_message):
    with pytest.raises(BackendUnavailableError) as info:
        load_pipeline(bundle_dir, "tensorrt")
    assert str(info.value) == missing_message


def _error_lines(res: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]


def test_export_cli_says_tensorrt_is_missing_in_the_one_line(tmp_path, missing_message):
    res = subprocess.run([str(AWML), "export", str(ROOT / "config" / "centerpoint.yaml"), "--mode", "both",
                          "--work-dir", str(tmp_path / "w")], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode != 0
    assert _error_lines(res) == [f"error: {missing_message}"], res.stderr


def test_replay_eval_cli_says_tensorrt_is_missing_in_the_one_line(tmp_path, bundle_dir, missing_message):
    from awml_deploy_core.data.rosbag_io import write_synthetic_bag

    bag = write_synthetic_bag(tmp_path / "drive", 0.5, seed=11, progress=False)
    config = tmp_path / "c.yaml"
    config.write_text(f"work_dir: {bundle_dir}\ndevice: cpu\n")
    res = subprocess.run([str(AWML), "replay-eval", str(bag.path), "--config", str(config), "--backend", "tensorrt",
                          "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode != 0
    assert _error_lines(res) == [f"error: {missing_message}"], res.stderr


def test_realtime_replay_says_tensorrt_is_missing_in_the_one_line(tmp_path, missing_message):
    """`replay_evaluation --backend tensorrt` (process supervisor of the nodes package) checks through the loader
    before reading the bag or starting any process: the same line, exit 3."""
    exe = ROOT / "install" / "awml_deploy_nodes" / "lib" / "awml_deploy_nodes" / "replay_evaluation"
    if not exe.exists():
        pytest.skip("the colcon workspace is not built here")
    res = subprocess.run([str(exe), str(tmp_path / "no_bag_needed"), "--config", str(ROOT / "config" / "centerpoint.yaml"),
                          "--backend", "tensorrt", "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 3, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines == [f"replay_evaluation: error: {missing_message}"], res.stderr

