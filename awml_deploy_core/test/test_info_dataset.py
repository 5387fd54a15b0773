"""The AWML (mmdet3d v2) info-format writer and reader."""

from __future__ import annotations

import json
import os
import pickle
import shutil

import numpy as np
import pytest

from awml_deploy_core.data.info_dataset import InfoDataset, generate_dataset, safe_load_pickle, write_info_dataset
from awml_deploy_core.data.lidar import LidarSpec
from awml_deploy_core.data.synthetic import generate_frames
from awml_deploy_core.errors import DatasetError

SMALL = LidarSpec(beams=32, azimuth_resolution_deg=0.4)


@pytest.fixture(scope="module")
def frames():
    return list(generate_frames(11, 3, frames_per_sequence=2, lidar=SMALL))


@pytest.fixture()
def written(tmp_path, frames):
    return write_info_dataset(frames, tmp_path / "ds")


def test_round_trip_pkl_equals_frames(written, frames):
    ds = InfoDataset(written)
    assert len(ds) == len(frames) and ds.class_names == frames[0].class_names and ds.dropped == {}
    for f, s in zip(frames, ds):
        assert s.points.dtype == np.float32 and s.points.shape == (len(f.points), 5)
        assert np.array_equal(s.points, f.points_with_time_lag())
        assert s.timestamp == f.timestamp
        assert np.array_equal(s.gt.boxes, f.gt.boxes) and s.gt.boxes.dtype == np.float32
        assert np.array_equal(s.gt.labels, f.gt.labels)
        assert np.array_equal(s.gt.velocities, f.gt.velocities)
        assert np.array_equal(s.num_lidar_points, f.num_lidar_points)
        assert np.array_equal(s.valid, f.num_lidar_points > 0)
        assert s.instance_tokens == tuple(f"{i:016x}" for i in f.instance_ids)
        assert s.lidar_path.is_file() and s.lidar_path.parent.parent == written.parent
    assert ds[-1].token == ds[len(ds) - 1].token
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_file_layout_is_awml_v2(written, frames):
    info = pickle.loads(written.read_bytes())  # our own file: plain pickle is fine here
    assert info["metainfo"]["classes"] == list(frames[0].class_names)
    entry = info["data_list"][1]
    assert set(entry) >= {"sample_idx", "token", "timestamp", "lidar_points", "instances"}
    assert entry["lidar_points"]["num_pts_feats"] == 5 and not os.path.isabs(entry["lidar_points"]["lidar_path"])
    inst = entry["instances"][0]
    assert set(inst) >= {"bbox_3d", "bbox_label_3d", "velocity", "num_lidar_pts", "bbox_3d_isvalid"}
    assert len(inst["bbox_3d"]) == 7 and len(inst["velocity"]) == 2
    # Point files are float32 x, y, z, intensity, ring (as T4 LIDAR_CONCAT); keep column 4 on request.
    raw = np.fromfile(written.parent / entry["lidar_points"]["lidar_path"], np.float32).reshape(-1, 5)
    assert np.array_equal(raw[:, 4], frames[1].ring.astype(np.float32))
    kept = InfoDataset(written, column4="keep")[1]
    assert np.array_equal(kept.points[:, 4], frames[1].ring.astype(np.float32))
    assert not list(written.parent.rglob("*.tmp"))  # atomic writes leave no temporaries


def test_json_info_and_data_root(tmp_path, frames, written):
    jpath = write_info_dataset(frames[:2], tmp_path / "js", info_name="infos.json")
    ds = InfoDataset(jpath)
    assert np.array_equal(ds[1].gt.boxes, frames[1].gt.boxes)
    assert np.array_equal(ds[1].points[:, :4], frames[1].points)
    # The info file elsewhere, points found through data_root.
    moved = tmp_path / "elsewhere" / "infos.pkl"
    moved.parent.mkdir()
    shutil.copy(written, moved)
    ds2 = InfoDataset(moved, data_root=written.parent)
    assert np.array_equal(ds2[0].points, InfoDataset(written)[0].points)


def test_class_mapping_by_name(written, frames):
    ds = InfoDataset(written, class_names=["pedestrian", "car", "motorcycle"])
    names = frames[0].class_names
    expect_drop: dict[str, int] = {}
    for f in frames:
        for lab in f.gt.labels:
            if names[lab] not in ("pedestrian", "car"):
                expect_drop[names[lab]] = expect_drop.get(names[lab], 0) + 1
    assert ds.dropped == expect_drop
    for f, s in zip(frames, ds):
        keep = np.isin(np.array(names)[f.gt.labels], ["pedestrian", "car"])
        assert np.array_equal(s.gt.boxes, f.gt.boxes[keep])
        mapped = np.array([["pedestrian", "car"].index(names[k]) for k in f.gt.labels[keep]])
        assert np.array_equal(s.gt.labels, mapped.reshape(-1))


def test_real_awml_style_info_with_numpy_and_quirks(tmp_path):
    """An info file as AWML writes it: numpy arrays, ignored (-1) labels, NaN velocity, 4 or 6 features."""
    (tmp_path / "data").mkdir()
    pts6 = np.arange(60, dtype=np.float32).reshape(10, 6)
    pts6.tofile(tmp_path / "data" / "a.bin")
    pts4 = np.arange(20, dtype=np.float32).reshape(5, 4)
    pts4.tofile(tmp_path / "data" / "b.bin")
    info = {
        "metainfo": {"categories": {"car": 0, "pedestrian": 1, "barrier": 2}, "version": "t4"},
        "data_list": [
            {
                "sample_idx": 0,
                "token": "tokA",
                "timestamp": 1_700_000_000_500_000,  # microseconds (v1 style)
                "lidar_points": {"lidar_path": "data/a.bin", "num_pts_feats": 6, "lidar2ego": np.eye(4)},
                "instances": [
                    {"bbox_3d": np.array([1, 2, 0.0, 4, 2, 1.5, 0.1]), "bbox_label_3d": 0, "velocity": np.array([np.nan, np.nan]), "num_lidar_pts": 7, "bbox_3d_isvalid": True},
                    {"bbox_3d": [5, 5, 0, 0.5, 0.5, 1.7, 0], "bbox_label_3d": -1, "velocity": [0, 0], "num_lidar_pts": 0, "bbox_3d_isvalid": False},
                    {"bbox_3d": [9, 9, 0, 1, 1, 1, 0], "bbox_label_3d": 2, "velocity": [0, 0], "num_lidar_pts": 3, "bbox_3d_isvalid": True},
                ],
            },
            {"sample_idx": 1, "token": "tokB", "timestamp": 12.5, "lidar_points": {"lidar_path": "data/b.bin", "num_pts_feats": 4}, "instances": []},
        ],
    }
    path = tmp_path / "t4_infos.pkl"
    path.write_bytes(pickle.dumps(info, protocol=2))
    ds = InfoDataset(path, class_names=("car", "truck", "bus", "bicycle", "pedestrian"), box_z_origin=0.0)
    assert ds.dropped == {"<ignored>": 1, "barrier": 1}
    s = ds[0]
    assert s.timestamp == pytest.approx(1_700_000_000.5)
    assert np.array_equal(s.points[:, :4], pts6[:, :4]) and np.all(s.points[:, 4] == 0)
    assert s.gt.labels.tolist() == [0]
    assert s.gt.boxes[0, 2] == pytest.approx(0.75)  # bottom centre 0 -> gravity centre 0 + h/2
    assert s.gt.velocities.tolist() == [[0.0, 0.0]]
    b = ds[1]
    assert b.points.shape == (5, 5) and np.array_equal(b.points[:, :4], pts4) and np.all(b.points[:, 4] == 0)


# --------------------------------------------------------------------------------- bad input
def test_missing_info_file(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        InfoDataset(tmp_path / "nope.pkl")


@pytest.mark.parametrize("name,blob", [("bad.pkl", b"\x80\x04garbage"), ("bad.pkl", b""), ("bad.json", b"{not json"), ("bad.json", b"\xff\xfe")])
def test_corrupt_info_file(tmp_path, name, blob):
    (tmp_path / name).write_bytes(blob)
    with pytest.raises(DatasetError, match=name):
        InfoDataset(tmp_path / name)


def test_truncated_pickle(tmp_path, written):
    bad = tmp_path / "trunc.pkl"
    bad.write_bytes(written.read_bytes()[:-50])
    with pytest.raises(DatasetError, match="trunc.pkl"):
        InfoDataset(bad)


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps({"metainfo": {"classes": ["car"]}, "data_list": [Evil()]}))
    with pytest.raises(DatasetError, match="not allowed"):
        InfoDataset(bad)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):
        safe_load_pickle(pickle.dumps(Evil()))


def test_data_list_missing(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"metainfo": {"classes": ["car"]}, "infos": []}))
    with pytest.raises(DatasetError, match="data_list"):
        InfoDataset(p)


def test_missing_point_file(written):
    ds = InfoDataset(written)
    victim = ds.point_path(1)
    victim.unlink()
    with pytest.raises(DatasetError, match=r"frame 1 .*not found"):
        ds[1]
    assert len(ds[0].points) > 0  # the other frames still read
    with pytest.raises(DatasetError, match="not found"):
        InfoDataset(written).fingerprint()


def test_point_file_size_not_multiple(written):
    ds = InfoDataset(written)
    with open(ds.point_path(2), "ab") as fh:
        fh.write(b"\x00\x00\x00")
    with pytest.raises(DatasetError, match=r"frame 2 .*not a multiple of num_pts_feats\*4 = 20"):
        ds[2]


def test_bad_entries(tmp_path):
    p = tmp_path / "e.json"
    p.write_text(json.dumps({"metainfo": {"classes": ["car"]}, "data_list": [{"token": "t0"}]}))
    with pytest.raises(DatasetError, match=r"frame 0 \(token t0\).*lidar_path"):
        InfoDataset(p)
    p.write_text(json.dumps({"metainfo": {"classes": ["car"]}, "data_list": [{"lidar_points": {"lidar_path": "a.bin"}, "instances": [{"bbox_3d": [0] * 7, "bbox_label_3d": 4}]}]}))
    with pytest.raises(DatasetError, match="label 4 outside"):
        InfoDataset(p)


# --------------------------------------------------------------------------------- fingerprint
def test_fingerprint_is_content_based(written):
    fp = InfoDataset(written).fingerprint()
    assert fp == InfoDataset(written).fingerprint() and len(fp) == 64
    ds = InfoDataset(written)
    os.utime(ds.point_path(0), (1, 1))  # mtime does not matter
    assert InfoDataset(written).fingerprint() == fp
    with open(ds.point_path(0), "r+b") as fh:
        fh.write(b"\x01\x02\x03\x04")
    assert InfoDataset(written).fingerprint() != fp


def test_generate_dataset_is_deterministic(tmp_path):
    a = generate_dataset(tmp_path / "a", 3, seed=5, frames_per_sequence=2, lidar=SMALL)
    b = generate_dataset(tmp_path / "b", 3, seed=5, frames_per_sequence=2, lidar=SMALL)
    c = generate_dataset(tmp_path / "c", 3, seed=6, frames_per_sequence=2, lidar=SMALL)
    fa, fb, fc = (InfoDataset(p).fingerprint() for p in (a, b, c))
    assert fa == fb != fc
    assert len(InfoDataset(a)) == 3
