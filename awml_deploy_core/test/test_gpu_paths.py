"""PyTorch precision option, ONNX Runtime provider choice, and the GPU pre/post paths.

The CPU tests run everywhere (refusals, defaults, the static voxelizer against the plain-Python rules); the CUDA
tests (bit identity CPU vs CUDA, the static decode path, CUDA-graph replay, synchronization counts) skip
without a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from awml_deploy_core.config import CenterPointModelConfig, DeployConfig, OnnxRuntimeConfig, PyTorchConfig
from awml_deploy_core.errors import BackendUnavailableError, ConfigError
from awml_deploy_core.loader import backend_precision, load_pipeline, ort_providers, torch_runners
from awml_deploy_core.models.centerpoint import build_centerpoint, graph_shapes
from awml_deploy_core.pipelines.centerpoint.decode import decode
from awml_deploy_core.pipelines.centerpoint.features import encoder_features
from awml_deploy_core.pipelines.centerpoint.voxelize import voxelize

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def tiny_model_cfg() -> CenterPointModelConfig:
    return CenterPointModelConfig(point_cloud_range=[-10.24, -10.24, -3.0, 10.24, 10.24, 5.0], max_voxels=2000,
                                  max_points_per_voxel=8)


def messy_cloud(n: int, seed: int = 0) -> np.ndarray:
    """Points in and out of range, NaN/inf rows, dense clusters (per-pillar overflow), duplicates."""
    rng = np.random.default_rng(seed)
    pts = np.zeros((n, 5), np.float32)
    pts[:, :2] = rng.uniform(-14, 14, (n, 2))
    pts[:, 2] = rng.uniform(-4, 6, n)
    pts[:, 3] = rng.uniform(0, 255, n)
    pts[: n // 10, :2] = rng.normal(0, 0.1, (n // 10, 2))  # a dense cluster
    pts[n // 10: n // 10 + 5, 0] = np.nan
    pts[n // 10 + 5: n // 10 + 8, 1] = np.inf
    return pts


def signed_zero_cloud(n: int, seed: int = 7) -> np.ndarray:
    """messy_cloud whose first points sit at exactly -0.0 (first in their pillars, so never truncated), and a
    pillar of two identical points that no other point shares (the mean is exact: x - mean is exactly 0)."""
    pts = messy_cloud(n, seed)
    pts[0:2, :3] = -0.0
    pts[2:4, 0] = -0.0
    same = np.float32([3.05, 3.05, 0.5, 7.0, 0.0])
    cell = np.floor((pts[:, :2] - np.float32(-10.24)) / np.float32(0.32))
    pts[(cell == np.floor((same[:2] - np.float32(-10.24)) / np.float32(0.32))).all(axis=1), 0] = 100.0  # out of range
    pts[4:6] = same
    return pts


# ------------------------------------------------------------------------------------------- CPU
@pytest.mark.parametrize("precision, graph", [("fp16", False), ("tf32", False), ("fp32", True)])
def test_gpu_only_options_are_refused_on_cpu(precision, graph):
    cfg = tiny_model_cfg()
    with pytest.raises(ConfigError, match="needs a CUDA device") as e:
        torch_runners(build_centerpoint(cfg), cfg, "cpu", precision=precision, cuda_graph=graph)
    assert "\n" not in str(e.value)


def test_unknown_precision_is_refused():
    with pytest.raises(ConfigError, match="not one of"):
        torch_runners(build_centerpoint(tiny_model_cfg()), tiny_model_cfg(), "cpu", precision="bf16")
    with pytest.raises(ConfigError, match="pytorch backend runs"):
        load_pipeline(None, "pytorch", "cpu", precision="int8")


def test_load_pipeline_precision_for_pytorch():
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        load_pipeline(None, "pytorch", "cpu", precision="fp16")
    with load_pipeline(None, "pytorch", "cpu", precision="fp32") as lp:
        assert lp.precision == "fp32" and lp.provenance()["pytorch"] == {"precision": "fp32", "cuda_graph": False}


@cuda
def test_cuda_graph_is_the_default_on_cuda():
    """Unset, pytorch.cuda_graph captures the static graphs on CUDA (on CPU it stays off: see above)."""
    assert PyTorchConfig().cuda_graph is None
    with load_pipeline(None, "pytorch", "cuda") as lp:
        assert lp.provenance()["pytorch"] == {"precision": "fp32", "cuda_graph": True}
        assert lp.pipeline.runners["head"].cuda_graph and not lp.pipeline.runners["encoder"].cuda_graph
    with load_pipeline(DeployConfig(pytorch=PyTorchConfig(cuda_graph=False)), "pytorch", "cuda") as lp:
        assert lp.provenance()["pytorch"]["cuda_graph"] is False and not lp.pipeline.runners["head"].cuda_graph


def test_backend_precision_reports_the_pytorch_precision():
    cfg = DeployConfig(pytorch=PyTorchConfig(precision="fp16"))
    assert backend_precision("pytorch", cfg) == "fp16"
    assert backend_precision("onnxruntime", cfg) == "fp32"
    assert cfg.verify.tolerances[backend_precision("pytorch", cfg)].atol > cfg.verify.tolerances["fp32"].atol


def test_ort_providers_follow_the_device_unless_set():
    assert ort_providers(DeployConfig(), "cpu") == ["CPUExecutionProvider"]
    explicit = DeployConfig(onnxruntime=OnnxRuntimeConfig(providers=["CPUExecutionProvider"]))
    assert ort_providers(explicit, "cuda") == ["CPUExecutionProvider"]


def test_ort_on_cuda_without_onnxruntime_gpu_is_one_line():
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        assert ort_providers(DeployConfig(), "cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return
    with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu") as e:
        ort_providers(DeployConfig(), "cuda")
    assert "\n" not in str(e.value) and "CUDAExecutionProvider" in str(e.value)


def test_static_voxelizer_keeps_the_rules_on_a_messy_cloud():
    """Independent statement of the rules (plain Python) vs the static-shape voxelizer."""
    cfg = CenterPointModelConfig(point_cloud_range=[-10.24, -10.24, -3.0, 10.24, 10.24, 5.0], max_voxels=300,
                                 max_points_per_voxel=4)
    pts = messy_cloud(5000)
    vox = voxelize(torch.from_numpy(pts), cfg)
    r, (vx, vy, _), (gx, gy) = cfg.point_cloud_range, cfg.voxel_size, cfg.grid_size
    order, members = [], {}
    for i, p in enumerate(pts):
        if not np.all(np.isfinite(p[:3])) or not (r[0] <= p[0] < r[3] and r[1] <= p[1] < r[4] and r[2] <= p[2] < r[5]):
            continue
        ix = min(max(int(np.floor((p[0] - np.float32(r[0])) / np.float32(vx))), 0), gx - 1)
        iy = min(max(int(np.floor((p[1] - np.float32(r[1])) / np.float32(vy))), 0), gy - 1)
        members.setdefault((iy, ix), []).append(i)
        if len(members[(iy, ix)]) == 1:
            order.append((iy, ix))
    kept = order[: cfg.max_voxels]
    assert [tuple(c) for c in vox.coords.tolist()] == kept
    for v, c in enumerate(kept):
        idx = members[c][: cfg.max_points_per_voxel]
        assert int(vox.num_points[v]) == len(idx)
        np.testing.assert_array_equal(vox.points[v, : len(idx)].numpy(), pts[idx])
        assert not vox.points[v, len(idx):].any()
    s = vox.stats
    assert s.num_voxels == len(kept) and s.pillars_dropped == len(order) - len(kept) > 0
    assert s.nan_dropped == 8
    assert s.points_truncated == sum(max(len(members[c]) - cfg.max_points_per_voxel, 0) for c in kept) > 0
    assert s.points_in_dropped_pillars == sum(len(members[c]) for c in order[cfg.max_voxels:])
    assert s.points_used == sum(min(len(members[c]), cfg.max_points_per_voxel) for c in kept)


def test_empty_and_all_out_of_range_clouds():
    cfg = tiny_model_cfg()
    for pts in (np.zeros((0, 5), np.float32), np.full((7, 5), 100.0, np.float32)):
        vox = voxelize(torch.from_numpy(pts), cfg)
        assert vox.points.shape == (0, cfg.max_points_per_voxel, 5) and vox.coords.shape == (0, 2)
        assert vox.stats.num_voxels == 0 and vox.stats.out_of_range == len(pts)


# ------------------------------------------------------------------------------------------- CUDA
@cuda
def test_voxelize_and_features_bit_identical_on_cuda():
    cfg = tiny_model_cfg()
    pts = torch.from_numpy(messy_cloud(20000, seed=3))
    a, b = voxelize(pts, cfg), voxelize(pts.cuda(), cfg)
    assert a.stats == b.stats
    for name in ("points", "num_points", "coords"):
        assert torch.equal(getattr(a, name), getattr(b, name).cpu()), name
    assert torch.equal(encoder_features(a, cfg), encoder_features(b, cfg).cpu())


@cuda
@pytest.mark.parametrize("n_feat, slots", [(9, 3), (10, 8), (11, 20), (11, 32)])
def test_features_kernel_bit_identical_to_the_cpu_matmul(n_feat, slots):
    """The Triton features kernel (where triton imports) against the CPU's mean tree and batched matmul, bit for
    bit: signed zeros included (points at exactly -0.0 and at the pillar mean), slot counts that are and are not
    powers of two."""
    from awml_deploy_core.pipelines.centerpoint import features_triton

    cfg = tiny_model_cfg().model_copy(update={"encoder_in_features": n_feat, "max_points_per_voxel": slots})
    pts = signed_zero_cloud(20000)
    vox = voxelize(torch.from_numpy(pts), cfg)
    ref = encoder_features(vox, cfg)
    vox_cuda = voxelize(torch.from_numpy(pts).cuda(), cfg)
    got = encoder_features(vox_cuda, cfg).cpu()
    assert features_triton.available(vox_cuda.slots) == features_triton.ENABLED
    assert torch.equal(ref.view(torch.int32), got.view(torch.int32))


@cuda
def test_decode_static_path_matches_cpu():
    cfg = tiny_model_cfg().model_copy(update={"max_num": 50})
    model = build_centerpoint(cfg).eval()
    x = torch.randn(graph_shapes(cfg).spatial_features)
    with torch.inference_mode():
        outs = torch_runners(model, cfg)["head"]({"spatial_features": x})
    a = decode(outs, cfg)
    b = decode({k: v.cuda() for k, v in outs.items()}, cfg)
    assert len(a) == len(b) > 0
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)
    np.testing.assert_allclose(a.boxes, b.boxes, rtol=1e-5, atol=1e-5)
    from awml_deploy_core.pipelines.centerpoint.decode import GraphDecoder

    graph = GraphDecoder(cfg)
    for scale in (1.0, 0.7):  # capture, then replay on new values
        outs_cuda = {k: v.cuda() * scale for k, v in outs.items()}
        g, e = graph(outs_cuda), decode(outs_cuda, cfg)
        assert graph.eager_reason is None and len(g) == len(e)
        for f in ("boxes", "scores", "labels", "velocities"):
            np.testing.assert_array_equal(getattr(g, f), getattr(e, f))


@cuda
@pytest.mark.parametrize("precision", ["fp32", "tf32", "fp16"])
def test_precision_outputs_float32_and_close_to_fp32(precision):
    cfg = tiny_model_cfg()
    model = build_centerpoint(cfg).eval()
    x = {"spatial_features": torch.randn(graph_shapes(cfg).spatial_features, device="cuda")}
    ref = torch_runners(model, cfg, "cuda")["head"](x)
    got = torch_runners(model, cfg, "cuda", precision=precision)["head"](x)
    graph = torch_runners(model, cfg, "cuda", precision=precision, cuda_graph=True)["head"]
    g1, g2 = graph(x), graph({k: v * 0.5 for k, v in x.items()})
    tol = DeployConfig().verify.tolerances[precision]
    for k in ref:
        assert got[k].dtype == torch.float32 and got[k].is_contiguous()
        torch.testing.assert_close(got[k], ref[k], atol=tol.atol * 10, rtol=tol.rtol * 10)
        # graph replay = eager at the same precision; in fp16 cuDNN may pick another kernel inside the capture
        # (one run in ~10 on an H200 differed in the last half-precision bits)
        exact = precision != "fp16"
        torch.testing.assert_close(g1[k], got[k], atol=0 if exact else tol.atol, rtol=1e-6 if exact else tol.rtol)
    assert not torch.equal(g1["heatmap"], g2["heatmap"])  # replay reads the new input
    assert next(model.parameters()).dtype == torch.float32  # fp16 left the caller's model alone


@cuda
def test_yolox_cuda_graph_per_batch_size_equals_eager():
    """YOLOX's images input is batched: one captured graph per batch size, each replay = eager at that precision."""
    from awml_deploy_core.config import YOLOXModelConfig
    from awml_deploy_core.models.yolox import build_yolox

    cfg = YOLOXModelConfig(input_size=[64, 96])
    model = build_yolox(cfg).eval()
    eager = torch_runners(model, cfg, "cuda", "yolox", precision="fp16")["yolox"]
    graph = torch_runners(model, cfg, "cuda", "yolox", precision="fp16", cuda_graph=True)["yolox"]
    assert graph.cuda_graph
    for b in (1, 3, 1):
        x = {"images": torch.rand(b, 3, 64, 96, device="cuda") * 255}
        torch.testing.assert_close(graph(x)["output"], eager(x)["output"])
    assert len(graph._graphs) == 2  # batch 1 captured once, reused


@cuda
def test_pre_and_post_synchronize_at_most_once_each():
    from awml_deploy_core.bench_gpu import count_syncs
    from awml_deploy_core.pipelines.centerpoint.pipeline import CenterPointPipeline

    cfg = tiny_model_cfg()
    pipe = CenterPointPipeline(cfg, torch_runners(build_centerpoint(cfg).eval(), cfg, "cuda"), "cuda")
    cloud = torch.from_numpy(messy_cloud(20000)).cuda()
    pipe(cloud)  # warm-up (lazy init, constant uploads)
    sites: list[str] = []
    pre, n_pre = count_syncs(lambda: pipe.preprocess(cloud), sites)
    outs = pipe.head(pipe.scatter(pipe.encode(pre.input_features), pre.coords))
    _, n_post = count_syncs(lambda: pipe.postprocess(outs), sites)
    assert n_pre <= 1 and n_post <= 1, (n_pre, n_post, sites)
    # as __call__ runs them: padded preprocess does not wait for the GPU; the frame's one sync is postprocess's
    sites.clear()
    pre, n_pre = count_syncs(lambda: pipe.preprocess(cloud, padded=True), sites)
    outs = pipe.head(pipe.scatter(pipe.encode(pre.input_features), pre.coords, pre.padded))
    _, n_post = count_syncs(lambda: pipe.postprocess(outs), sites)
    assert pre.padded and n_pre == 0 and n_post <= 1, (n_pre, n_post, sites)


@cuda
def test_padded_cuda_frame_equals_the_sliced_one():
    """__call__ on CUDA (padded preprocess, encoder on max_voxels rows, spare-cell scatter, stats read after
    postprocess) gives the detections and stats of the sliced path; an empty cloud gives no detections."""
    from awml_deploy_core.pipelines.centerpoint.pipeline import CenterPointPipeline

    cfg = tiny_model_cfg()
    model = build_centerpoint(cfg).eval()
    with torch.no_grad():  # enough candidates above the threshold for a real comparison
        model.pts_bbox_head.task_heads[0].heatmap[-1].bias += 4.0
    pipe = CenterPointPipeline(cfg, torch_runners(model, cfg, "cuda"), "cuda")
    for n, seed in ((20000, 1), (5000, 2), (0, 0)):
        cloud = torch.from_numpy(messy_cloud(n, seed) if n else np.zeros((0, 5), np.float32)).cuda()
        got = pipe(cloud, return_raw=True)
        pre = pipe.preprocess(cloud)
        pad = pipe.preprocess(cloud, padded=True)
        assert pad.padded and pipe._pre_graph.eager_reason is None
        assert got.stats == pre.stats == pad.stats.resolve()
        v = pre.stats.num_voxels
        assert torch.equal(pad.input_features[:v], pre.input_features) and torch.equal(pad.coords[:v], pre.coords)
        assert (pad.coords[v:] == torch.tensor([cfg.grid_size[1], 0], device="cuda")).all()
        if v == 0:
            assert len(got.detections) == 0
            continue
        spatial = pipe.scatter(pipe.encode(pre.input_features), pre.coords)
        torch.testing.assert_close(pipe.scatter(pipe.encode(pad.input_features), pad.coords, True), spatial)
        ref = pipe.postprocess(pipe.head(spatial))
        assert len(ref) > 0 and len(got.detections) == len(ref)
        np.testing.assert_allclose(got.detections.boxes, ref.boxes, atol=1e-4, rtol=1e-4)
        assert got.raw["pillar_features"].shape[0] == v


# ------------------------------------------------------------------ static preprocess, GPU circle NMS (CPU too)
def padded_cloud(pts: np.ndarray, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``voxelize_padded``'s inputs on CPU: the cloud and ``pad`` rows of garbage after it, and its point count."""
    buf = torch.full((len(pts) + pad, 5), float("nan"))  # padding rows hold garbage: must be ignored
    buf[len(pts):, :3] = 0.0  # ... including in-range points
    buf[: len(pts)] = torch.from_numpy(pts)
    return buf, torch.tensor([len(pts)])


def _padded_vs_eager(pts: np.ndarray, cfg: CenterPointModelConfig, device: str, pad: int) -> None:
    from awml_deploy_core.pipelines.centerpoint.features import encoder_features_from
    from awml_deploy_core.pipelines.centerpoint.voxelize import voxel_stats, voxelize_padded

    ref = voxelize(torch.from_numpy(pts), cfg)
    buf, n_real = padded_cloud(pts, pad)
    buf, n_real = buf.to(device), n_real.to(device)
    p, num, coords, counters = voxelize_padded(buf, n_real, cfg)
    stats = voxel_stats(counters.tolist(), len(pts), cfg)
    assert stats == ref.stats
    v = stats.num_voxels
    assert p.shape[0] == num.shape[0] == coords.shape[0] == cfg.max_voxels
    assert torch.equal(p[:v].cpu(), ref.slots) and not p[v:].any()
    assert torch.equal(p[:v, :, 5].cpu(), (torch.arange(p.shape[1]) < ref.num_points[:, None]).float())
    assert torch.equal(num[:v].cpu(), ref.num_points) and not num[v:].any()
    assert torch.equal(coords[:v].cpu(), ref.coords)
    feats = encoder_features_from(p, num, coords, cfg)
    assert torch.equal(feats[:v].cpu(), encoder_features(ref, cfg)) and not feats[v:].any()


@pytest.mark.parametrize("max_voxels", [300, 5000])  # pillars dropped / all kept
def test_padded_voxelizer_equals_voxelize_bit_for_bit(max_voxels):
    cfg = tiny_model_cfg().model_copy(update={"max_voxels": max_voxels})
    _padded_vs_eager(messy_cloud(6000, seed=1), cfg, "cpu", pad=1000)
    _padded_vs_eager(np.zeros((0, 5), np.float32), cfg, "cpu", pad=7)


def _nms_case(seed: int, k: int = 200, n_cls: int = 5) -> np.ndarray:
    """decode_packed-like rows: centres in tight clusters (long suppression chains), descending scores with ties,
    some rows not candidates."""
    rng = np.random.default_rng(seed)
    packed = np.zeros((k, 12), np.float32)
    centres = rng.uniform(-20, 20, (8, 2))
    packed[:, :2] = centres[rng.integers(0, 8, k)] + rng.normal(0, 1.5, (k, 2))
    packed[:, 2:7] = rng.uniform(0.5, 3, (k, 5))
    packed[:, 7] = np.sort(np.round(rng.uniform(0.1, 1, k), 2))[::-1]  # ties
    packed[:, 8] = rng.integers(0, n_cls, k)
    packed[:, 11] = rng.uniform(0, 1, k) > 0.2
    packed[k - 20:, 11] = 0  # failing cells sort last
    return packed


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("rule", ["per_class", "autoware", "one_radius"])
def test_gpu_circle_nms_keeps_the_host_nms_set(seed, rule):
    from awml_deploy_core.pipelines.centerpoint.decode import unpack, unpack_nms
    from awml_deploy_core.pipelines.centerpoint.gpu_nms import circle_nms_keep
    from awml_deploy_core.pipelines.centerpoint.nms import nms

    nms_cfg = {"per_class": {"circle_radius": [2.0, 3.0, 4.0, 0.5, 0.3]},
               "autoware": {"circle_nms_dist_threshold": 1.5 + seed},
               "one_radius": {"circle_radius": [2.5]}}[rule]
    cfg = tiny_model_cfg()
    cfg = cfg.model_copy(update={"nms": cfg.nms.model_copy(
        update={**nms_cfg, "pre_max_size": 150 - 10 * seed, "post_max_size": 40 + 10 * seed})})
    packed = _nms_case(seed)
    ref = nms(unpack(packed), cfg)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        for steps in (200, 2):  # converged / too few steps: flagged, the host NMS runs instead
            keep, conv = circle_nms_keep(torch.from_numpy(packed).to(dev), cfg, steps=steps)
            full = np.concatenate([packed, keep.cpu().numpy().astype(np.float32)[:, None],
                                   np.full((len(packed), 1), float(conv), np.float32)], axis=1)
            got = unpack_nms(full, cfg)
            for f in ("boxes", "scores", "labels", "velocities"):
                np.testing.assert_array_equal(getattr(got, f), getattr(ref, f))
            if steps == 200:
                assert bool(conv)
    assert len(ref) > 5
    _, conv = circle_nms_keep(torch.from_numpy(packed), cfg, steps=1)
    assert not bool(conv)  # clustered centres need more than one step


@cuda
def test_graph_preprocess_bit_identical_to_cpu_and_one_sync():
    from awml_deploy_core.bench_gpu import count_syncs
    from awml_deploy_core.pipelines.centerpoint.pipeline import CenterPointPipeline

    cfg = tiny_model_cfg().model_copy(update={"max_voxels": 800})
    for max_voxels in (800, 5000):
        cfg = cfg.model_copy(update={"max_voxels": max_voxels})
        _padded_vs_eager(messy_cloud(20000, seed=5), cfg, "cuda", pad=3000)
        pipe = CenterPointPipeline(cfg, torch_runners(build_centerpoint(cfg).eval(), cfg, "cuda"), "cuda")
        cpu = CenterPointPipeline(cfg, torch_runners(build_centerpoint(cfg).eval(), cfg, "cpu"), "cpu")
        for n, seed in ((20000, 1), (21000, 2), (40000, 3), (20000, 4), (0, 0)):  # bucket reuse, new bucket
            pts = messy_cloud(n, seed) if n else np.zeros((0, 5), np.float32)
            cloud = torch.from_numpy(pts).cuda()
            got, syncs = count_syncs(lambda: pipe.preprocess(cloud))
            ref = cpu.preprocess(pts)
            assert pipe._pre_graph.eager_reason is None and syncs <= 1
            assert got.stats == ref.stats
            assert torch.equal(got.input_features.cpu(), ref.input_features)
            assert torch.equal(got.coords.cpu(), ref.coords)


@cuda
@pytest.mark.parametrize("rule", [{}, {"circle_nms_dist_threshold": 1.5}, {"iou_nms": "autoware"}])
def test_graph_postprocess_equals_host_nms(rule):
    from awml_deploy_core.pipelines.centerpoint.decode import COL_CONVERGED, GraphDecoder
    from awml_deploy_core.pipelines.centerpoint.nms import nms

    cfg = tiny_model_cfg()
    torch.manual_seed(0)
    cfg = cfg.model_copy(update={"max_num": 300, "score_threshold": 0.3,
                                 "nms": cfg.nms.model_copy(update=rule)})
    model = build_centerpoint(cfg).eval()
    x = torch.randn(graph_shapes(cfg).spatial_features)
    with torch.inference_mode():
        outs = torch_runners(model, cfg)["head"]({"spatial_features": x})
    logits = outs["heatmap"][0].amax(0).reshape(-1)
    thr = float(np.log(0.3 / 0.7))
    graph = GraphDecoder(cfg)
    assert graph.gpu_nms == ("iou_nms" not in rule)
    for n_pass in (40, 250):  # candidates above the score threshold: some / most of max_num
        shift = thr - float(torch.topk(logits, n_pass + 1).values[-1]) - 1e-4
        o = {k: (v + shift if k == "heatmap" else v).cuda() for k, v in outs.items()}
        ref = nms(decode(o, cfg), cfg)  # eager decode on the GPU, NMS on the host
        got = graph.postprocess(o)
        assert graph.eager_reason is None and len(got) == len(ref) > 0
        for f in ("boxes", "scores", "labels", "velocities"):
            np.testing.assert_array_equal(getattr(got, f), getattr(ref, f))
        if graph.gpu_nms:
            assert graph._packed[0, COL_CONVERGED].item() == 1.0  # the GPU NMS reached its fixed point


@cuda
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_head_writes_into_the_decoder_buffers(cuda_graph):
    """Once the decoder graph is captured, __call__ has the head write its outputs into the decoder's input
    buffers (postprocess copies nothing): the detections are those of the separate stages, frame after frame."""
    from awml_deploy_core.pipelines.centerpoint.pipeline import CenterPointPipeline

    cfg = tiny_model_cfg()
    model = build_centerpoint(cfg).eval()
    with torch.no_grad():
        model.pts_bbox_head.task_heads[0].heatmap[-1].bias += 4.0
    pipe = CenterPointPipeline(cfg, torch_runners(model, cfg, "cuda", "centerpoint", "fp32", cuda_graph), "cuda")
    ref = CenterPointPipeline(cfg, torch_runners(model, cfg, "cuda"), "cuda")
    for n, seed in ((20000, 1), (15000, 2), (20000, 3)):
        cloud = torch.from_numpy(messy_cloud(n, seed)).cuda()
        got = pipe(cloud)
        bufs = pipe._decoder.buffers
        assert bufs is not None and set(bufs) >= {"heatmap", "reg"}
        pre = ref.preprocess(cloud)
        outs = ref.head(ref.scatter(ref.encode(pre.input_features), pre.coords))
        for name, buf in bufs.items():  # the last frame's head outputs are in the buffers
            torch.testing.assert_close(buf, outs[name], atol=1e-5, rtol=1e-5)
        want = ref.postprocess(outs)
        assert len(want) > 0 and len(got.detections) == len(want)
        np.testing.assert_allclose(got.detections.boxes, want.boxes, atol=1e-4, rtol=1e-4)
