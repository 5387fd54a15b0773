"""TensorRT export and backend.

Everywhere: engine cache key and invalidation rules, precision policy -> builder settings (TensorRT 8.6 vs 10),
optimisation profiles against a real exported ONNX, INT8 calibration batches, and the `--dry-run` plan (CLI).
With `import tensorrt` and a CUDA GPU only: real engines for both graphs, compared with ONNX Runtime.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from awml_deploy_core.loader import torch_runners
from awml_deploy_core.bundle import Bundle, sha256_file
from awml_deploy_core.config import CenterPointModelConfig, DataConfig, DeployConfig, ExportConfig, TensorRTConfig
from awml_deploy_core.errors import ConfigError
from awml_deploy_core.evaluate import open_dataset, take_samples
from awml_deploy_core.export.onnx_export import export_centerpoint_onnx, onnx_file_names
from awml_deploy_core.export.tensorrt_dry_run import print_dry_run
from awml_deploy_core.export.tensorrt_plan import (
    CacheKey,
    TrtEnvironment,
    build_plan,
    check_cached_engine,
    check_graph_profiles,
    engine_artifact,
    engine_cache_key,
    fit_rows,
    validate_profiles,
)
from awml_deploy_core.export.tensorrt_policy import builder_settings, verification_precision
from awml_deploy_core.families.centerpoint import FAMILY
from awml_deploy_core.families.centerpoint_trt import calibration_batches, profiles as centerpoint_profiles
from awml_deploy_core.models.centerpoint import build_centerpoint
from awml_deploy_core.pipelines.centerpoint.pipeline import CenterPointPipeline

ROOT = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).parent / "awml-deploy"
TRT_REASON = "TensorRT not installed: engine build/run tests need `import tensorrt` and a CUDA GPU"

PROFILE = {"input_features": {"min": [1000, 32, 11], "opt": [20000, 32, 11], "max": [40000, 32, 11]}}


def _key(**change) -> CacheKey:
    base = dict(onnx_sha256="a" * 64, trt_version="10.3.0", gpu_name="Orin", compute_capability="8.7",
                precision="fp16", profiles=PROFILE, extra={"workspace_mb": 2048, "dla_core": None})
    return CacheKey(**{**base, **change})


def _record(bundle: Bundle, graph: str, key: CacheKey, data: bytes = b"plan") -> Path:
    path = bundle.root / f"{graph}.engine"
    path.write_bytes(data)
    bundle.record(engine_artifact(graph), path, key.digest(), kind="tensorrt", cache_key=key.fields())
    return path


# --------------------------------------------------------------------------------------------- cache key
def test_cache_key_is_deterministic_and_covers_every_field():
    a = engine_cache_key("a" * 64, "10.3.0", "Orin", "8.7", "fp16", PROFILE, {"workspace_mb": 2048})
    assert a == engine_cache_key("a" * 64, "10.3.0", "Orin", "8.7", "fp16", PROFILE, {"workspace_mb": 2048})
    assert a == _key(extra={"workspace_mb": 2048}).digest()
    changed = [
        engine_cache_key("b" * 64, "10.3.0", "Orin", "8.7", "fp16", PROFILE, {"workspace_mb": 2048}),
        engine_cache_key("a" * 64, "8.6.2", "Orin", "8.7", "fp16", PROFILE, {"workspace_mb": 2048}),
        engine_cache_key("a" * 64, "10.3.0", "NVIDIA H100", "8.7", "fp16", PROFILE, {"workspace_mb": 2048}),
        engine_cache_key("a" * 64, "10.3.0", "Orin", "9.0", "fp16", PROFILE, {"workspace_mb": 2048}),
        engine_cache_key("a" * 64, "10.3.0", "Orin", "8.7", "int8", PROFILE, {"workspace_mb": 2048}),
        engine_cache_key("a" * 64, "10.3.0", "Orin", "8.7", "fp16", {}, {"workspace_mb": 2048}),
        engine_cache_key("a" * 64, "10.3.0", "Orin", "8.7", "fp16", PROFILE, {"workspace_mb": 4096}),
    ]
    assert len({a, *changed}) == len(changed) + 1


def test_same_key_is_reusable_also_after_a_manifest_round_trip(tmp_path):
    bundle = Bundle.open(tmp_path)
    _record(bundle, "encoder", _key())
    ok, reason = check_cached_engine(bundle, "encoder", _key())
    assert ok, reason
    bundle.save()
    ok, reason = check_cached_engine(Bundle.open(tmp_path), "encoder", _key())  # JSON: tuples came back as lists
    assert ok and "hash verified" in reason


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"trt_version": "8.6.2"}, "built by TensorRT 10.3.0, this is TensorRT 8.6.2"),
        ({"gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"},
         "built for Orin (compute capability 8.7), this GPU is NVIDIA H100 80GB HBM3 (compute capability 9.0)"),
        ({"compute_capability": "8.6"}, "compute capability 8.7), this GPU is Orin (compute capability 8.6)"),
        ({"precision": "int8"}, "precision changed (fp16 -> int8)"),
        ({"profiles": {"input_features": {"min": [1, 32, 11], "opt": [20000, 32, 11], "max": [40000, 32, 11]}}},
         "optimisation profiles changed (input_features min [1000, 32, 11]"),
        ({"onnx_sha256": "b" * 64}, "the ONNX changed (sha256 aaaaaaaaaaaa -> bbbbbbbbbbbb)"),
        ({"extra": {"workspace_mb": 4096, "dla_core": None}}, "workspace_mb changed (2048 -> 4096)"),
        ({"extra": {"workspace_mb": 2048, "dla_core": 0}}, "dla_core changed (None -> 0)"),
    ],
)
def test_changed_key_is_rebuilt_with_the_reason(tmp_path, change, expected):
    bundle = Bundle.open(tmp_path)
    _record(bundle, "encoder", _key())
    ok, reason = check_cached_engine(bundle, "encoder", _key(**change))
    assert not ok
    assert expected in reason, reason


def test_several_changes_are_all_named(tmp_path):
    bundle = Bundle.open(tmp_path)
    _record(bundle, "head", _key())
    ok, reason = check_cached_engine(bundle, "head", _key(trt_version="8.6.2", precision="fp32_tf32"))
    assert not ok and "TensorRT 8.6.2" in reason and "fp16 -> fp32_tf32" in reason


def test_missing_or_changed_engine_file_is_not_reusable(tmp_path):
    bundle = Bundle.open(tmp_path)
    ok, reason = check_cached_engine(bundle, "encoder", _key())
    assert not ok and "no encoder engine" in reason
    path = _record(bundle, "encoder", _key())
    path.write_bytes(b"tampered")
    ok, reason = check_cached_engine(bundle, "encoder", _key())
    assert not ok and "does not match its manifest hash" in reason
    path.unlink()
    ok, reason = check_cached_engine(bundle, "encoder", _key())
    assert not ok and "missing" in reason


def test_entry_without_cache_key_is_not_reusable(tmp_path):
    bundle = Bundle.open(tmp_path)
    path = tmp_path / "old.engine"
    path.write_bytes(b"x")
    bundle.record(engine_artifact("encoder"), path, _key().digest())
    ok, reason = check_cached_engine(bundle, "encoder", _key())
    assert not ok and "no cache key" in reason


# --------------------------------------------------------------------------------------------- precision policy
V86, V10 = (8, 6), (10, 3)


@pytest.mark.parametrize(
    ("precision", "version", "flags", "network", "tolerance"),
    [
        ("auto", V86, {"FP16", "TF32"}, {"EXPLICIT_BATCH"}, "fp16"),
        ("auto", V10, {"FP16", "TF32"}, set(), "fp16"),
        ("fp16", V86, {"FP16", "TF32"}, {"EXPLICIT_BATCH"}, "fp16"),
        ("fp16", V10, {"FP16", "TF32"}, set(), "fp16"),
        ("fp32_tf32", V86, {"TF32"}, {"EXPLICIT_BATCH"}, "tf32"),
        ("fp32_tf32", V10, {"TF32"}, set(), "tf32"),
        ("strongly_typed", V10, set(), {"STRONGLY_TYPED"}, "tf32"),
        ("int8", V86, {"INT8", "FP16", "TF32"}, {"EXPLICIT_BATCH"}, "int8"),
        ("int8", V10, {"INT8", "FP16", "TF32"}, set(), "int8"),
    ],
)
def test_builder_settings_per_policy(precision, version, flags, network, tolerance):
    s = builder_settings(precision, version)
    assert set(s.builder_flags) == flags
    assert set(s.network_flags) == network
    assert s.tolerance == tolerance
    assert "STRICT_TYPES" not in s.builder_flags  # deprecated in 8.2, removed in 10: never used
    assert s.workspace_api == "set_memory_pool_limit"
    assert s.strongly_typed == (precision == "strongly_typed")
    assert s.int8_calibration == (precision == "int8")
    assert s.default_device_type == "GPU" and s.dla_core is None


def test_strongly_typed_needs_tensorrt_9():
    with pytest.raises(ConfigError, match="strongly_typed.*TensorRT >= 9.*8.6"):
        builder_settings("strongly_typed", V86)
    assert builder_settings("strongly_typed", (9, 2)).strongly_typed


def test_int8_with_qdq_is_explicit_quantization_without_calibrator():
    s = builder_settings("int8", V10, has_qdq=True)
    assert s.explicit_quantization and not s.int8_calibration and "INT8" in s.builder_flags
    auto = builder_settings("auto", V86, has_qdq=True)
    assert "INT8" in auto.builder_flags and auto.tolerance == "int8" and not auto.int8_calibration
    assert builder_settings("strongly_typed", V10, has_qdq=True).tolerance == "int8"


def test_implicit_int8_deprecation_noted_from_10_1():
    assert any("deprecated since TensorRT 10.1" in n for n in builder_settings("int8", V10).notes)
    assert not any("deprecated" in n for n in builder_settings("int8", V86).notes)


def test_dla_settings():
    s = builder_settings("fp16", V86, dla_core=1)
    assert s.default_device_type == "DLA" and s.dla_core == 1 and "GPU_FALLBACK" in s.builder_flags
    with pytest.raises(ConfigError, match="DLA runs FP16 and INT8 only"):
        builder_settings("fp32_tf32", V10, dla_core=0)


def test_old_and_future_tensorrt():
    assert builder_settings("fp16", (8, 2)).workspace_api == "max_workspace_size"
    with pytest.raises(ConfigError, match="TensorRT 11.0 removed"):
        builder_settings("fp16", (11, 0))
    assert builder_settings("auto", (11, 0)).strongly_typed


def test_verification_precision_keys_exist_in_the_default_tolerances():
    tolerances = DeployConfig().verify.tolerances
    for p in ("auto", "fp16", "fp32_tf32", "strongly_typed", "int8"):
        assert verification_precision(p) in tolerances
    assert verification_precision("fp32_tf32") == "tf32" and verification_precision("int8") == "int8"


# --------------------------------------------------------------------------------------------- profiles
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A real exported ONNX pair of the default small model (max_voxels 30000, P 20, F 11)."""
    cfg = CenterPointModelConfig()
    out = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    graphs = export_centerpoint_onnx(build_centerpoint(cfg), cfg, out, simplify=False)
    return cfg, out, {k: g.path for k, g in graphs.items()}


def test_profile_matching_the_graph_is_valid(exported):
    cfg, _, paths = exported
    spec = {s.key: s for s in FAMILY.graphs(cfg)}
    check_graph_profiles(FAMILY, spec["encoder"], paths["encoder"], centerpoint_profiles(DeployConfig(model=cfg),
                                                                                        "encoder"))
    assert centerpoint_profiles(DeployConfig(model=cfg), "head") == {}
    validate_profiles(paths["head"], {})


@pytest.mark.parametrize(
    ("profile", "match"),
    [
        ({"input_features": {"min": [1000, 20, 11], "opt": [2000, 20, 11], "max": [40000, 32, 11]}},
         r"max_points_per_voxel \(P\) is static 32"),
        ({"input_features": {"min": [1000, 32, 9], "opt": [2000, 32, 9], "max": [40000, 32, 9]}},
         r"encoder_in_features \(F\) is static 11"),
        ({"input_features": {"min": [1000, 20], "opt": [2000, 20], "max": [40000, 20]}}, "rank 2"),
        ({"input_features": {"min": [3000, 32, 11], "opt": [2000, 32, 11], "max": [40000, 32, 11]}},
         "1 <= min <= opt <= max"),
        ({"input_features": {"min": [1000, 32, 11], "opt": [2000, 32, 11], "max": [20000, 32, 11]}},
         "num_voxels_max=20000 is below the model's max_voxels=30000"),
        ({"voxels": {"min": [1], "opt": [1], "max": [1]}}, r"input 'voxels'.*\['input_features'\]"),
        ({}, "input 'input_features' has dynamic dims"),
    ],
)
def test_profile_contradicting_the_graph_is_a_config_error(exported, profile, match):
    encoder = FAMILY.graph(exported[0], "encoder")
    with pytest.raises(ConfigError, match=match):
        check_graph_profiles(FAMILY, encoder, exported[2]["encoder"], profile)


def test_head_profile_must_keep_the_static_shape(exported):
    with pytest.raises(ConfigError, match="static"):
        validate_profiles(exported[2]["head"], {"spatial_features": {"min": [1, 32, 128, 128],
                                                                    "opt": [1, 32, 128, 128],
                                                                    "max": [1, 32, 128, 128]}})


def test_missing_onnx_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="ONNX file not found"):
        validate_profiles(tmp_path / "nope.onnx", PROFILE)


# --------------------------------------------------------------------------------------------- calibration
@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    cfg = CenterPointModelConfig()
    dataset = open_dataset(DataConfig(num_frames=3), tmp_path_factory.mktemp("data"), cfg.class_names,
                           progress=False)
    torch.manual_seed(0)
    pipe = CenterPointPipeline(cfg, torch_runners(build_centerpoint(cfg).eval(), cfg), "cpu")
    return cfg, take_samples(dataset, 3, progress=False), pipe


def test_fit_rows_crops_evenly_and_repeats_real_rows():
    x = np.arange(10, dtype=np.float32)[:, None]
    assert fit_rows(x, 4)[:, 0].tolist() == [0, 3, 6, 9]
    assert fit_rows(x[:3], 7)[:, 0].tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert fit_rows(x, 10).tolist() == x.tolist()


def test_calibration_batches_are_the_pipelines_preprocessing(frames):
    cfg, samples, pipe = frames
    n_vox = 600
    shape = [n_vox, cfg.max_points_per_voxel, cfg.encoder_in_features]
    batches = list(calibration_batches(samples, pipe, 3, shape))
    assert len(batches) == 3
    gx, gy = cfg.grid_size
    for s, b in zip(samples, batches):
        assert set(b) == {"input_features", "spatial_features"}
        assert b["input_features"].shape == (n_vox, cfg.max_points_per_voxel, cfg.encoder_in_features)
        assert b["input_features"].dtype == np.float32
        assert b["spatial_features"].shape == (1, cfg.pillar_channels, gy, gx)
        pre = pipe.preprocess(s.points)
        feats = pre.input_features.numpy()
        np.testing.assert_array_equal(b["input_features"], fit_rows(feats, n_vox))
        v = min(len(feats), n_vox)
        if len(feats) <= n_vox:  # every real pillar is there, in order
            np.testing.assert_array_equal(b["input_features"][:v], feats)
        with torch.inference_mode():
            spatial = pipe.scatter(pipe.encode(pre.input_features), pre.coords).numpy()
        np.testing.assert_array_equal(b["spatial_features"], spatial)


def test_calibration_batches_count_and_determinism(frames):
    _, samples, pipe = frames
    a = list(calibration_batches(samples, pipe, 2, [256, 32, 11], ("encoder",)))
    b = list(calibration_batches(samples, pipe, 2, [256, 32, 11], ("encoder",)))
    assert len(a) == 2 and all(set(x) == {"input_features"} for x in a)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["input_features"], y["input_features"])
    assert len(list(calibration_batches(samples, pipe, 10, [64, 32, 11], ("head",)))) == 3


# --------------------------------------------------------------------------------------------- plan / dry run
def _cfg(work: Path, **trt) -> DeployConfig:
    return DeployConfig(work_dir=str(work), export=ExportConfig(mode="trt", tensorrt=TensorRTConfig(**trt)))


def test_plan_with_a_bundle_onnx_checks_profiles_and_reuse(exported, tmp_path):
    cfg_model, src, _ = exported
    bundle = Bundle.open(tmp_path)
    for name in onnx_file_names(cfg_model).values():
        (tmp_path / name).write_bytes((src / name).read_bytes())
    cfg = _cfg(tmp_path, num_voxels_max=40000)
    env = TrtEnvironment("10.3.0", "Orin", "8.7")
    plan = build_plan(cfg, bundle, env=env)
    enc = plan.graphs["encoder"]
    assert enc.profile_check == "ok" and enc.onnx_sha256 == sha256_file(tmp_path / onnx_file_names(cfg_model)["encoder"])
    assert enc.cache_key and not enc.reusable and "no encoder engine" in enc.reason
    assert enc.timing_cache.name == "timing_trt10.3.0_orin_sm87.cache"
    assert any("exceeds model.max_voxels" in n for n in enc.notes)
    assert enc.engine.name == "pts_voxel_encoder_centerpoint_small.engine" and enc.name == "pts_voxel_encoder"
    assert plan.to_dict()["graphs"]["encoder"]["cache_key"] == enc.cache_key.digest()  # JSON-ready
    for graph in ("encoder", "head"):  # pretend both engines were built under this key
        _record(bundle, graph, plan.graphs[graph].cache_key)
    again = build_plan(cfg, bundle, env=env)
    assert all(g.reusable for g in again.graphs.values())
    other = build_plan(cfg, bundle, env=TrtEnvironment("8.6.2", "Orin", "8.7"))
    assert "built by TensorRT 10.3.0, this is TensorRT 8.6.2" in other.graphs["head"].reason
    changed = build_plan(_cfg(tmp_path, num_voxels_max=50000), bundle, env=env)
    assert "optimisation profiles changed" in changed.graphs["encoder"].reason
    assert changed.graphs["head"].reusable  # the head's static input has no profile


def test_plan_int8_names_calibrator_and_cache(exported, tmp_path):
    cfg_model, src, _ = exported
    for name in onnx_file_names(cfg_model).values():
        (tmp_path / name).write_bytes((src / name).read_bytes())
    cfg = _cfg(tmp_path, precision="int8", calibrator="minmax", calibration_frames=8, num_voxels_opt=5000)
    plan = build_plan(cfg, Bundle.open(tmp_path), env=TrtEnvironment("8.6.2", "Orin", "8.7"))
    enc, head = plan.graphs["encoder"].calibration, plan.graphs["head"].calibration
    assert enc.calibrator == "IInt8MinMaxCalibrator" and enc.frames == 8 and enc.input_name == "input_features"
    assert enc.batch_shape == [5000, 32, 11] and head.batch_shape == [1, 32, 256, 256]
    assert "calib_encoder_minmax_" in enc.cache.name and "FP32 reference pipeline" in head.data
    assert head.input_name == "spatial_features"
    assert plan.graphs["encoder"].tolerance == "int8"


def test_dry_run_prints_the_plan_and_fails_on_a_contradicting_profile(exported, tmp_path):
    cfg_model, src, _ = exported
    for name in onnx_file_names(cfg_model).values():
        (tmp_path / name).write_bytes((src / name).read_bytes())
    console = Console(record=True, width=200)
    assert print_dry_run(_cfg(tmp_path), Bundle.open(tmp_path), console) == 0
    text = console.export_text()
    assert "TensorRT build plan" in text and "pts_voxel_encoder_centerpoint_small.engine" in text
    assert "profile check" in text and "ok" in text
    console = Console(record=True, width=200)
    with pytest.raises(ConfigError, match="below the model's max_voxels"):
        print_dry_run(_cfg(tmp_path, num_voxels_opt=5000, num_voxels_max=10000), Bundle.open(tmp_path), console)
    assert "problem" in console.export_text()


def test_dry_run_strongly_typed_without_tensorrt_shows_both_generations(tmp_path):
    plan = build_plan(_cfg(tmp_path, precision="strongly_typed"), Bundle.open(tmp_path), env=TrtEnvironment())
    builders = plan.graphs["encoder"].builder
    assert plan.tensorrt_version == "not installed" and plan.gpu == "unknown"
    assert any(v is None for v in builders.values()) and any(v is not None for v in builders.values())
    assert not plan.problems  # buildable on TensorRT 10: a note, not a failure


@pytest.mark.parametrize("mode", ["trt", "both"])
def test_dry_run_cli(tmp_path, mode):
    res = subprocess.run([str(CLI), "export", str(ROOT / "config" / "centerpoint.yaml"), "--mode", mode,
                          "--dry-run", "--work-dir", str(tmp_path / "w")],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "TensorRT build plan" in out and f"export.mode: {mode}" in out
    assert "pts_voxel_encoder_centerpoint_small.engine" in out and "pts_backbone_neck_head" in out
    assert "input_features min [1000, 32, 11]" in out
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert "TensorRT: not installed" in out
    assert not any((tmp_path / "w").glob("*.engine"))


# --------------------------------------------------------------------------------------------- real engines
def _require_trt_gpu():
    pytest.importorskip("tensorrt", reason=TRT_REASON)
    if not torch.cuda.is_available():
        pytest.skip("TensorRT is installed but no CUDA GPU is visible: engine build/run tests need one")


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp16", "fp32_tf32"])
def test_real_engines_match_onnxruntime(tmp_path, precision):
    _require_trt_gpu()
    from awml_deploy_core.backends.onnxruntime_backend import OrtGraphRunner
    from awml_deploy_core.backends.tensorrt_backend import TrtGraphRunner
    from awml_deploy_core.export.tensorrt_build import build_engines

    model_cfg = CenterPointModelConfig(max_voxels=4000)
    cfg = DeployConfig(model=model_cfg, work_dir=str(tmp_path), device="cuda",
                       export=ExportConfig(mode="both", tensorrt=TensorRTConfig(
                           precision=precision, num_voxels_min=64, num_voxels_opt=2000, num_voxels_max=4000,
                           workspace_mb=1024)))
    torch.manual_seed(0)
    graphs = export_centerpoint_onnx(build_centerpoint(model_cfg), model_cfg, tmp_path, simplify=False)
    onnx = {k: g.path for k, g in graphs.items()}
    bundle = Bundle.open(tmp_path)
    engines = build_engines(cfg, bundle, onnx, device="cuda")
    assert all(p.is_file() for p in engines.values())
    ok, reason = check_cached_engine(Bundle.open(tmp_path), "encoder", build_plan(
        cfg, Bundle.open(tmp_path), onnx=onnx).graphs["encoder"].cache_key)
    assert ok, reason  # recorded and reusable at once

    trt_r = {"encoder": TrtGraphRunner(engines["encoder"], "trt:encoder", "cuda", pad_rows_to_min=True),
             "head": TrtGraphRunner(engines["head"], "trt:head", "cuda")}
    ort_r = {k: OrtGraphRunner(p, f"ort:{k}") for k, p in onnx.items()}
    tol = cfg.verify.tolerances[verification_precision(precision)]
    g = torch.Generator().manual_seed(1)
    for v in (3, 64, 777, 4000):  # below the profile minimum (padded), at it, in range, at the maximum
        x = torch.randn(v, model_cfg.max_points_per_voxel, model_cfg.encoder_in_features, generator=g)
        ref = ort_r["encoder"]({"input_features": x})["pillar_features"]
        out = trt_r["encoder"]({"input_features": x.cuda()})["pillar_features"]
        assert tuple(out.shape) == (v, model_cfg.pillar_channels)
        torch.testing.assert_close(out.float().cpu(), ref, atol=tol.atol, rtol=tol.rtol)
    s = torch.randn(1, model_cfg.pillar_channels, 256, 256, generator=g)
    ref = ort_r["head"]({"spatial_features": s})
    out = trt_r["head"]({"spatial_features": s.cuda()})
    assert list(out) == list(ref)  # heatmap, reg, height, dim, rot, vel: Autoware's order
    for k in ref:
        torch.testing.assert_close(out[k].float().cpu(), ref[k], atol=tol.atol, rtol=tol.rtol)


@pytest.mark.tensorrt
def test_real_engine_rebuilt_when_the_profile_changes(tmp_path):
    _require_trt_gpu()
    from awml_deploy_core.export.tensorrt_build import build_engines

    model_cfg = CenterPointModelConfig(max_voxels=1000)
    graphs = export_centerpoint_onnx(build_centerpoint(model_cfg), model_cfg, tmp_path, simplify=False)
    onnx = {k: g.path for k, g in graphs.items()}

    def cfg(max_v: int) -> DeployConfig:
        return DeployConfig(model=model_cfg, work_dir=str(tmp_path), device="cuda", export=ExportConfig(
            mode="trt", tensorrt=TensorRTConfig(num_voxels_min=16, num_voxels_opt=500, num_voxels_max=max_v)))

    build_engines(cfg(1000), Bundle.open(tmp_path), onnx, device="cuda")
    plan = build_plan(cfg(2000), Bundle.open(tmp_path), onnx=onnx)
    assert not plan.graphs["encoder"].reusable
    assert "optimisation profiles changed" in plan.graphs["encoder"].reason
    assert plan.graphs["head"].reusable
