"""YOLOX family: config, model names, ONNX contract (T4 geometry N = 18,900), letterbox / decode / NMS against
independent references, PyTorch vs ONNX Runtime parity, and the COCO metrics with an ignore region."""

from __future__ import annotations

import json

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from awml_deploy_core.config import DeployConfig, YOLOXModelConfig, load_deploy_config, t4_yolox_model
from awml_deploy_core.errors import ConfigError
from awml_deploy_core.export.yolox_onnx import check_yolox_contract, export_yolox_onnx
from awml_deploy_core.families import get_family
from awml_deploy_core.metrics.detection2d import GroundTruth2D, evaluate_coco
from awml_deploy_core.models.yolox import build_yolox, num_anchors
from awml_deploy_core.pipelines.yolox.postprocess import Detections2D, box_iou, make_grid, nms_per_class, postprocess
from awml_deploy_core.pipelines.yolox.preprocess import letterbox, letterbox_geometry

_PKG = str(__import__("awml_deploy_core").__path__[0]) + "/"
TINY = dict(name="yolox_tiny_test", input_size=[96, 160], widen_factor=0.125, deepen_factor=0.33)


# ------------------------------------------------------------------------------------------ config
def test_family_selects_model_config(tmp_path):
    cfg = load_deploy_config("config/yolox.yaml")
    assert isinstance(cfg.model, YOLOXModelConfig) and cfg.model.num_classes == 8
    assert isinstance(load_deploy_config("config/centerpoint.yaml").model, type(DeployConfig().model))
    assert isinstance(DeployConfig(family="yolox").model, YOLOXModelConfig)
    p = tmp_path / "bad.yaml"
    p.write_text("family: yolox\nmodel:\n  input_size: [100, 160]\n")
    with pytest.raises(ConfigError, match="input_size"):
        load_deploy_config(p)
    p.write_text("family: yolox\nmodel:\n  voxel_size: [0.32, 0.32, 8.0]\n")  # a CenterPoint key
    with pytest.raises(ConfigError, match="voxel_size"):
        load_deploy_config(p)


def test_mmdet_parameter_names():
    keys = build_yolox(YOLOXModelConfig(**TINY)).state_dict().keys()
    for k in ("backbone.stem.conv.conv.weight", "backbone.stage4.1.conv1.conv.weight",  # SPP in stage 4
              "backbone.stage1.1.blocks.0.conv2.bn.running_var", "neck.reduce_layers.0.conv.weight",
              "neck.top_down_blocks.1.main_conv.conv.weight", "neck.out_convs.2.conv.weight",
              "bbox_head.multi_level_cls_convs.2.1.conv.weight", "bbox_head.multi_level_conv_cls.0.weight",
              "bbox_head.multi_level_conv_reg.1.bias", "bbox_head.multi_level_conv_obj.2.weight"):
        assert k in keys, k
    # YOLOX-tiny widths on the T4 geometry: about 5.0 M parameters (mmdet reports 5.06 M)
    n = sum(p.numel() for p in build_yolox(t4_yolox_model()).parameters())
    assert 4.9e6 < n < 5.1e6


# ------------------------------------------------------------------------------------------ contract
def test_t4_geometry_contract_from_file(tmp_path):
    cfg = t4_yolox_model()
    torch.manual_seed(0)
    g = export_yolox_onnx(build_yolox(cfg), cfg, tmp_path, opset=17, simplify=False)["yolox"]
    m = onnx.load(str(g.path))
    (inp,), (out,) = m.graph.input, m.graph.output
    dims_in = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    dims_out = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert (inp.name, out.name) == ("images", "output")
    assert isinstance(dims_in[0], str) and dims_in[1:] == [3, 960, 960]
    assert isinstance(dims_out[0], str) and dims_out[1:] == [18_900, 13]
    assert num_anchors(cfg) == 18_900
    assert next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) == 17
    assert check_yolox_contract(g.path, cfg, opset=17) == []
    other = t4_yolox_model().model_copy(update={"input_size": [640, 640]})
    assert any("output" in p for p in check_yolox_contract(g.path, other))


def test_dynamic_batch_and_parity_with_torch(tmp_path):
    cfg = YOLOXModelConfig(**TINY)
    torch.manual_seed(0)
    model = build_yolox(cfg).eval()
    path = export_yolox_onnx(model, cfg, tmp_path, opset=17, simplify=True)["yolox"].path
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for b in (1, 3):
        x = torch.rand(b, 3, 96, 160) * 255
        (y,) = sess.run(None, {"images": x.numpy()})
        with torch.no_grad():
            ref = model(x).numpy()
        assert y.shape == (b, num_anchors(cfg), 13)
        assert not model.training  # exporting left the model in eval mode
        np.testing.assert_allclose(y, ref, atol=1e-4, rtol=1e-3)


# ------------------------------------------------------------------------------------------ letterbox
def test_letterbox_matches_opencv_and_pads_114():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (90, 200, 3), dtype=np.uint8)
    out, geo = letterbox(img, (96, 160))
    assert geo.scale == pytest.approx(0.8) and geo.resized_hw == (72, 160)
    ref = cv2.resize(img.astype(np.float32), (160, 72), interpolation=cv2.INTER_LINEAR)  # independent
    np.testing.assert_allclose(out[:, :72].permute(1, 2, 0).numpy(), ref, atol=1e-3)
    assert torch.all(out[:, 72:] == 114.0)
    up, g2 = letterbox(img[:40, :50], (96, 160))  # upscaling: scale min(96/40, 160/50) = 2.4
    assert g2.resized_hw == (96, 120)
    ref = cv2.resize(img[:40, :50].astype(np.float32), (120, 96), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(up[:, :, :120].permute(1, 2, 0).numpy(), ref, atol=1e-3)
    assert torch.all(up[:, :, 120:] == 114.0)
    assert letterbox_geometry(1080, 1920, (960, 960)).resized_hw == (540, 960)


# ------------------------------------------------------------------------------------------ decode / NMS
def _naive_nms(boxes, scores, labels, thr):
    """Greedy NMS by hand, one class at a time, pure Python."""
    keep = []
    for c in sorted(set(labels.tolist())):
        idx = sorted([i for i in range(len(scores)) if labels[i] == c], key=lambda i: (-scores[i], i))
        alive = list(idx)
        while alive:
            i = alive.pop(0)
            keep.append(i)
            rest = []
            for j in alive:
                ax1, ay1, ax2, ay2 = boxes[i]
                bx1, by1, bx2, by2 = boxes[j]
                iw, ih = max(0.0, min(ax2, bx2) - max(ax1, bx1)), max(0.0, min(ay2, by2) - max(ay1, by1))
                inter = iw * ih
                union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
                if not inter / union > thr:
                    rest.append(j)
            alive = rest
    return sorted(keep, key=lambda i: (-scores[i], i))


def test_nms_matches_naive_reference():
    rng = np.random.default_rng(3)
    for _ in range(5):
        n = 60
        xy = rng.uniform(0, 100, (n, 2))
        wh = rng.uniform(5, 40, (n, 2))
        boxes = np.concatenate([xy, xy + wh], 1)
        scores = rng.uniform(0, 1, n).astype(np.float32)
        labels = rng.integers(0, 3, n)
        got = nms_per_class(boxes, scores, labels, 0.5).tolist()
        assert got == _naive_nms(boxes, scores, labels, 0.5)
    iou = box_iou(np.array([[0, 0, 10, 10.0]]), np.array([[5, 0, 15, 10.0], [20, 20, 30, 30.0]]))
    np.testing.assert_allclose(iou, [[50 / 150, 0.0]])


def test_decode_and_postprocess_by_hand():
    cfg = YOLOXModelConfig(**TINY)  # 96x160: strides 8/16/32 -> 12x20, 6x10, 3x5
    grid, strides = make_grid((96, 160), cfg.strides)
    n = num_anchors(cfg)
    assert n == 12 * 20 + 6 * 10 + 3 * 5 == len(grid)
    out = torch.zeros(1, n, 13)
    # anchor of stride 16 at cell (x=3, y=2): index 240 + 2 * 10 + 3
    a = 240 + 2 * 10 + 3
    assert grid[a].tolist() == [3.0, 2.0] and strides[a].item() == 16
    out[0, a, :4] = torch.tensor([0.5, -0.25, np.log(2.0), np.log(0.5)])
    out[0, a, 4] = 0.9
    out[0, a, 5 + 6] = 0.8  # pedestrian
    out[0, a, 5 + 1] = 0.5
    geo = letterbox_geometry(48, 80, (96, 160))  # scale 2
    (det,) = postprocess(out, grid, strides, [geo], 0.01, 0.65, 300)
    cx, cy, w, h = (0.5 + 3) * 16, (-0.25 + 2) * 16, 2.0 * 16, 0.5 * 16  # centre 56, 28; 32 x 8
    expect = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]) / 2.0
    np.testing.assert_allclose(det.boxes, [expect], atol=1e-5)
    assert det.labels.tolist() == [6] and det.scores[0] == pytest.approx(0.72)


# ------------------------------------------------------------------------------------------ metrics
def _gt(boxes, labels, ignore):
    return GroundTruth2D(np.array(boxes, np.float32), np.array(labels), np.array(ignore, bool), 100, 200)


def _det(boxes, scores, labels):
    return Detections2D(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32),
                        np.array(labels, np.int64))


def test_coco_metrics_with_ignore_region():
    names = list(YOLOXModelConfig().class_names)
    gt = [_gt([[10, 10, 50, 60], [100, 20, 150, 80], [160, 30, 190, 70]], [1, 6, 1], [False, False, True])]
    perfect = _det([[10, 10, 50, 60], [100, 20, 150, 80]], [0.9, 0.8], [1, 6])
    m = evaluate_coco(gt, [perfect], names)
    assert m.classes == ["car", "pedestrian"]  # present classes only; the ignored car adds no class
    assert m.map == pytest.approx(1.0) and m.per_class_ap50 == pytest.approx({"car": 1.0, "pedestrian": 1.0})
    assert m.num_ignored == 1 and m.num_gt == 2
    # a confident detection ON the ignore region is neither a true nor a false positive
    on_ignore = _det([[160, 30, 190, 70], [10, 10, 50, 60], [100, 20, 150, 80]], [0.95, 0.9, 0.8], [1, 1, 6])
    assert evaluate_coco(gt, [on_ignore], names).map == pytest.approx(1.0)
    # the same detection where there is no ignore region is a false positive ranked first: car AP drops
    gt_plain = [_gt([[10, 10, 50, 60], [100, 20, 150, 80]], [1, 6], [False, False])]
    m2 = evaluate_coco(gt_plain, [on_ignore], names)
    assert m2.per_class_ap50["car"] < 0.6 and m2.per_class_ap50["pedestrian"] == pytest.approx(1.0)
    # a box shifted to IoU 0.6: counts at 0.5, not at 0.75
    shifted = _det([[10, 10, 50, 60], [100, 20, 150, 80 - 24]], [0.9, 0.8], [1, 6])
    m3 = evaluate_coco(gt, [shifted], names)
    assert m3.per_class_ap50["pedestrian"] == pytest.approx(1.0) and m3.stats["ap75"] == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------ pipeline
def test_pipeline_batch_equals_single_and_backends_agree(tmp_path):
    from awml_deploy_core.backends.onnxruntime_backend import OrtGraphRunner
    from awml_deploy_core.backends.base import RunnerSet
    from awml_deploy_core.config import Tolerance
    from awml_deploy_core.families.yolox_eval import verify_backends
    from awml_deploy_core.loader import torch_runners

    from awml_deploy_core.data.camera import generate_camera_frame
    from awml_deploy_core.models.yolox import load_yolox_checkpoint

    cfg = YOLOXModelConfig(name="yolox_half", input_size=[192, 320])  # the shipped weights at half resolution
    fam = get_family("yolox")
    model, _ = load_yolox_checkpoint(fam.default_checkpoint.replace("package://awml_deploy_core/", _PKG), cfg)
    path = fam.export_onnx(model, cfg, tmp_path, 17, True, "test")["yolox"].path
    pt = fam.make_pipeline(cfg, torch_runners(model, cfg, "cpu", "yolox"), "cpu")
    on = fam.make_pipeline(cfg, RunnerSet({"yolox": OrtGraphRunner(path, "onnxruntime:yolox", ["CPUExecutionProvider"],
                                                                   "all", 1, False)}, "onnxruntime"), "cpu")
    frame = generate_camera_frame(10_000).image
    images = [frame, np.ascontiguousarray(frame[40:300, 100:600])]
    batch = pt(images)
    assert set(batch.timings_ms) == {"preprocess", "inference", "postprocess", "total"}
    def rows(d):  # the same set of detections, whatever the order among (near-)equal scores
        r = np.c_[d.boxes.round(1), d.labels]
        return r[np.lexsort(r.T[::-1])]

    for img, d in zip(images, batch.batch):
        single = pt(img).detections
        assert len(single) == len(d)
        np.testing.assert_allclose(rows(single), rows(d), atol=0.11)

    class S:  # a camera sample's fields verification reads
        def __init__(self, image):
            self.image, self.token = image, "t"

    res = verify_backends(("pytorch", pt), ("onnxruntime", on), [S(i) for i in images], Tolerance(atol=1e-4, rtol=1e-3),
                          "fp32", progress=False)
    assert res.passed and all(s.detections.identical_count for s in res.samples)
    assert len(pt(images[0]).detections) > 0  # the comparison saw detections, not two empty sets
    on.close()
    with pytest.raises(Exception, match="closed"):
        on(images[0])


def test_loader_finds_the_family_of_a_checkpoint():
    from awml_deploy_core.loader import load_pipeline

    with load_pipeline("package://awml_deploy_core/checkpoints/yolox_small.pth", "pytorch") as lp:
        assert lp.family.name == "yolox" and lp.cfg.model.input_size == [384, 640]
        out = lp.pipeline(get_family("yolox").warm_up_input(lp.cfg.model))
        assert out.detections.boxes.shape[1] == 4
