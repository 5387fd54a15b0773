"""The launch files, checked statically (`launch` is not installable here) and by running what they document.

Static (ast, no `launch` import): every Node() names an installed console script of awml_deploy_nodes; its
parameter file exists, is installed, and loads as ROS parameters that the node declares and accepts; every
parameter set from a launch argument is a declared node parameter fed by the argument of the same name; every
LaunchConfiguration is declared and every declared argument is used; remappings name the node's topics; the
one-line command in the docstring (a line starting with "$ ") uses the same executable, parameter file,
parameters and topics, its remappings being the launch arguments' defaults.
Dynamic: the documented command starts the node (TensorRT: fails with one line where TensorRT is absent), and,
where `launch_ros` imports, the launch file itself starts a node that answers a cloud.
Every check runs for each node's launch files (NODES: its parameter table and topics).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from ros_helpers import start_proc, stop, wait_for_line

ROOT = Path(__file__).resolve().parent.parent
PKG = "awml_deploy_nodes"
INSTALL_LIB = ROOT / "install" / PKG / "lib" / PKG
INSTALL_SHARE = ROOT / "install" / PKG / "share" / PKG


@dataclass(frozen=True)
class NodeSpec:
    params: str  # module with the node's PARAM_NAMES and validate()
    topics: frozenset[str]  # the node's own topics (remappable)
    input_topic: str  # the one every launch file and command remaps
    param_keys: tuple[str, ...]  # top-level keys a parameter file may use
    arguments: tuple[str, ...] = ("input_topic", "param_file")  # launch arguments every launch file declares


NODES = {
    "centerpoint_node": NodeSpec("awml_deploy_nodes.node_params", frozenset(
        {"~/input/pointcloud", "~/output/objects", "~/output/autoware_objects", "~/debug/inference_stats"}),
        "~/input/pointcloud", ("/**", "centerpoint", "/centerpoint")),
    "yolox_node": NodeSpec("awml_deploy_nodes.yolox_params", frozenset(
        {"~/input/image", "~/input/image/compressed", "~/output/detections", "~/output/objects",
         "~/debug/inference_stats"}), "~/input/image", ("/**", "yolox_node", "/yolox_node")),
    "calibration_status_node": NodeSpec("awml_deploy_nodes.calibration_status_params", frozenset(
        {"~/input/pointcloud", "~/input/image", "~/input/camera_info", "~/input/odometry",
         "~/output/calibration_status", "~/debug/inference_stats", "~/debug/preview"}), "~/input/pointcloud",
        ("/**", "calibration_status_node", "/calibration_status_node"),
        ("pointcloud_topic", "image_topic", "camera_info_topic", "param_file")),
}
# launch file -> the backend its parameters select
LAUNCH_FILES = {"centerpoint.launch.py": "onnxruntime", "centerpoint_trt.launch.py": "tensorrt",
                "yolox.launch.py": "onnxruntime", "yolox_trt.launch.py": "tensorrt",
                "calibration_status.launch.py": "onnxruntime"}


# --------------------------------------------------------------------------------------------- ast helpers
def _name(func: ast.expr) -> str:
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _name(n.func) == name]


def _kw(call: ast.Call, key: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == key), None)


def _const(node: ast.expr | None) -> object:
    return node.value if isinstance(node, ast.Constant) else None


def _helpers(tree: ast.Module) -> set[str]:
    """Local functions wrapping LaunchConfiguration(<their first argument>)."""
    out = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef) and fn.args.args and _calls(fn, "LaunchConfiguration"):
            out.add(fn.name)
    return out


def _argument_of(value: ast.expr, helpers: set[str]) -> str | None:
    """The launch argument a parameter value comes from (None for a literal)."""
    for call in _calls(value, "LaunchConfiguration"):
        return _const(call.args[0])
    if isinstance(value, ast.Call) and _name(value.func) in helpers and value.args:
        return _const(value.args[0])
    return None


def _console_scripts() -> dict[str, str]:
    tree = ast.parse((ROOT / PKG / "setup.py").read_text())
    scripts = {}
    for d in (n for n in ast.walk(tree) if isinstance(n, ast.Dict)):
        for k, v in zip(d.keys, d.values):
            if _const(k) == "console_scripts" and isinstance(v, ast.List):
                for e in v.elts:
                    name, target = (s.strip() for s in _const(e).split("="))
                    scripts[name] = target
    return scripts


class LaunchFile:
    def __init__(self, name: str) -> None:
        self.path = ROOT / "launch" / name
        self.tree = ast.parse(self.path.read_text())
        self.doc = ast.get_docstring(self.tree) or ""
        self.helpers = _helpers(self.tree)
        self.arguments = {_const(c.args[0]): c for c in _calls(self.tree, "DeclareLaunchArgument")}
        nodes = _calls(self.tree, "Node")
        assert len(nodes) == 1, f"{name}: expected one Node(...), found {len(nodes)}"
        self.node = nodes[0]

    def param_file(self) -> Path:
        """config/<file> named by the default of the argument given as a parameter file."""
        params = _kw(self.node, "parameters")
        files = [_argument_of(e, self.helpers) for e in params.elts if not isinstance(e, ast.Dict)]
        assert len(files) == 1, f"{self.path.name}: expected one parameter-file entry in parameters=[...]"
        default = self.resolve(_kw(self.arguments[files[0]], "default_value"))
        assert isinstance(default, ast.Call) and _name(default.func) == "PathJoinSubstitution", ast.dump(default)
        share, *rest = default.args[0].elts  # [FindPackageShare(PKG), "config", "<file>.param.yaml"]
        assert _name(share.func) == "FindPackageShare" and _const(share.args[0]) == PKG
        parts = [_const(e) for e in rest]
        assert parts[0] == "config" and parts[-1].endswith(".param.yaml"), parts
        return ROOT / Path(*parts)

    def resolve(self, node: ast.expr) -> ast.expr:
        """A local variable's assigned value (param_file = PathJoinSubstitution(...)), else the node itself."""
        if isinstance(node, ast.Name):
            for a in ast.walk(self.tree):
                if isinstance(a, ast.Assign) and any(isinstance(t, ast.Name) and t.id == node.id for t in a.targets):
                    return a.value
        return node

    def dict_params(self) -> dict[str, ast.expr]:
        out = {}
        for d in (e for e in _kw(self.node, "parameters").elts if isinstance(e, ast.Dict)):
            out.update({_const(k): v for k, v in zip(d.keys, d.values)})
        return out

    def command(self) -> list[str]:
        lines = [l[2:] for l in self.doc.splitlines() if l.startswith("$ ")]
        assert len(lines) == 1, f"{self.path.name}: the docstring needs exactly one '$ <command>' line"
        return shlex.split(lines[0])


def _ros_params(path: Path, spec: NodeSpec) -> dict:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict) and len(data) == 1, f"{path}: one top-level key (the node name or /**)"
    (node_key, body), = data.items()
    assert node_key in spec.param_keys, node_key
    assert set(body) == {"ros__parameters"} and isinstance(body["ros__parameters"], dict), path
    return body["ros__parameters"]


# --------------------------------------------------------------------------------------------- static
@pytest.mark.parametrize("name", sorted(LAUNCH_FILES))
def test_launch_file_static(name):
    lf = LaunchFile(name)
    # the node: an installed console script of this package
    assert _const(_kw(lf.node, "package")) == PKG
    exe = _const(_kw(lf.node, "executable"))
    scripts = _console_scripts()
    assert exe in scripts, f"{name}: executable {exe!r} is not a console script of {PKG}: {sorted(scripts)}"
    assert (INSTALL_LIB / exe).is_file(), f"{INSTALL_LIB / exe} missing: run tools/setup.sh"
    module, func = scripts[exe].split(":")
    assert callable(getattr(importlib.import_module(module), func))
    assert isinstance(_const(_kw(lf.node, "name")), str)
    spec = NODES[exe]
    params_module = importlib.import_module(spec.params)
    PARAM_NAMES, validate = params_module.PARAM_NAMES, params_module.validate  # noqa: N806

    # parameter file: exists, installed, ROS params YAML of declared parameters with valid values
    pfile = lf.param_file()
    assert pfile.is_file() and (INSTALL_SHARE / "config" / pfile.name).is_file(), pfile
    file_params = _ros_params(pfile, spec)
    assert set(file_params) <= set(PARAM_NAMES), set(file_params) - set(PARAM_NAMES)
    merged = dict(file_params)

    # parameters from arguments: declared names, fed by the argument of the same name
    used = {_argument_of(e, lf.helpers) for e in _kw(lf.node, "parameters").elts if not isinstance(e, ast.Dict)}
    for key, value in lf.dict_params().items():
        assert key in PARAM_NAMES, f"{name}: parameter {key!r} is not declared by the node"
        arg = _argument_of(value, lf.helpers)
        if arg is None:
            merged[key] = _const(value)
        else:
            assert arg == key, f"{name}: parameter {key!r} comes from argument {arg!r}: name them alike"
            used.add(arg)
            default = _const(_kw(lf.arguments[arg], "default_value"))
            # launch arguments override the parameter file: their defaults must not silently differ from it
            assert key not in file_params or file_params[key] == default, (
                f"{name}: argument {arg!r} defaults to {default!r}, the parameter file says {file_params[key]!r}")
            merged[key] = default
    validate(merged)  # raises with one line when a value is wrong
    assert merged["backend"] == LAUNCH_FILES[name]

    # remappings: the node's own topics, from declared arguments
    for pair in _kw(lf.node, "remappings").elts:
        src, dst = pair.elts
        assert _const(src) in spec.topics, _const(src)
        arg = _argument_of(dst, lf.helpers)
        if arg is not None:
            used.add(arg)
    in_helpers = {id(c) for fn in ast.walk(lf.tree) if isinstance(fn, ast.FunctionDef) and fn.name in lf.helpers
                  for c in _calls(fn, "LaunchConfiguration")}
    for call in _calls(lf.tree, "LaunchConfiguration"):
        if id(call) not in in_helpers:  # a helper's LaunchConfiguration(name): checked at its call sites
            assert _const(call.args[0]) in lf.arguments, f"{name}: LaunchConfiguration({ast.dump(call.args[0])}) undeclared"
    for call in (c for h in lf.helpers for c in _calls(lf.tree, h)):
        assert _const(call.args[0]) in lf.arguments, f"{name}: {_name(call.func)}({_const(call.args[0])!r}) undeclared"
    assert used == set(lf.arguments), f"{name}: declared but unused arguments {set(lf.arguments) - used}"
    for required in spec.arguments:
        assert required in lf.arguments, f"{name}: no launch argument {required!r}"
    if LAUNCH_FILES[name] == "tensorrt":
        assert {"bundle_dir", "precision"} <= set(lf.arguments)

    # the documented one-line command: same executable, parameter file, declared parameters, node topics
    cmd = lf.command()
    assert cmd[0] == f"install/{PKG}/lib/{PKG}/{exe}", cmd[0]
    assert "--ros-args" in cmd
    files = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--params-file"]
    assert files == [f"config/{pfile.name}"], files
    for i, a in enumerate(cmd):
        if a == "-p":
            assert cmd[i + 1].split(":=")[0] in PARAM_NAMES, cmd[i + 1]
        if a == "-r" and cmd[i + 1].startswith("~/"):
            assert cmd[i + 1].split(":=")[0] in spec.topics, cmd[i + 1]
    assert any(a.startswith(f"{spec.input_topic}:=") for a in cmd)
    # the command's remappings are the defaults of the launch arguments they stand for
    remaps = dict(cmd[i + 1].split(":=", 1) for i, a in enumerate(cmd) if a == "-r")
    for pair in _kw(lf.node, "remappings").elts:
        src, dst = pair.elts
        arg = _argument_of(dst, lf.helpers)
        if arg is not None and _const(src) in remaps:
            assert remaps[_const(src)] == _const(_kw(lf.arguments[arg], "default_value")), (name, _const(src))


# --------------------------------------------------------------------------------------------- dynamic
@pytest.mark.ros
def test_documented_command_starts_the_node(tmp_path, ros_env):
    from awml_deploy_nodes.bench_node import small_checkpoint

    ckpt = small_checkpoint(tmp_path / "small.pth")
    cmd = LaunchFile("centerpoint.launch.py").command()
    # the documented command, pointed at a test checkpoint (the shipped one may not be installed)
    cmd += ["-p", f"checkpoint:={ckpt}", "-p", f"onnx_cache_dir:={tmp_path / 'onnx'}"]
    log = tmp_path / "node.log"
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ros_env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        wait_for_line(log, "ready:", timeout=120)
        line = next(l for l in log.read_text().splitlines() if "ready:" in l)
        assert "onnxruntime" in line and "input /sensing/lidar/pointcloud" in line
        assert "output /perception/object_recognition/detection/awml/objects" in line
    finally:
        stop(proc)


@pytest.mark.ros
def test_documented_yolox_command_starts_the_node(tmp_path, ros_env):
    """The shipped YOLOX (installed with awml_deploy_core), exported on the fly into a test cache."""
    cmd = LaunchFile("yolox.launch.py").command() + ["-p", f"onnx_cache_dir:={tmp_path / 'onnx'}"]
    log = tmp_path / "node.log"
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ros_env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        wait_for_line(log, "ready:", timeout=180)
        line = next(l for l in log.read_text().splitlines() if "ready:" in l)
        assert "onnxruntime" in line and "yolox_small.pth" in line
        assert "input /sensing/camera/camera0/image_rect_color" in line
        assert "output /perception/object_recognition/detection/awml/camera0/detections" in line
    finally:
        stop(proc)


@pytest.mark.ros
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None,
                    reason="tensorrt is importable: this checks the failure where it is absent")
@pytest.mark.parametrize("name", ["centerpoint_trt.launch.py", "yolox_trt.launch.py"])
def test_documented_trt_command_fails_with_one_line_without_tensorrt(tmp_path, ros_env, name):
    cmd = LaunchFile(name).command()
    exe = Path(cmd[0]).name
    log = tmp_path / "node.log"
    proc = subprocess.run(cmd, cwd=ROOT, env=ros_env, stdout=log.open("w"), stderr=subprocess.STDOUT, timeout=120)
    lines = [l for l in log.read_text().splitlines() if l.strip()]
    assert proc.returncode == 3, lines
    assert len(lines) == 1 and lines[0].startswith(f"{exe}: error: ") and "tensorrt" in lines[0], lines


@pytest.mark.ros
@pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None,
                    reason="launch/launch_ros are not installable here (not on PyPI); runs on a ROS 2 install")
def test_launch_file_starts_a_node_that_answers(tmp_path, ros_env):
    from awml_deploy_nodes.bench_node import small_checkpoint

    ckpt = small_checkpoint(tmp_path / "small.pth")
    plan = [{"case": "plain", "seed": 400, "stamp": [1_700_003_000, 0], "wait": "output"}]
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    launch_log, pub_log = tmp_path / "launch.log", tmp_path / "pub.log"
    launch = start_proc(["run_launch.py", str(ROOT / "launch" / "centerpoint.launch.py"), "backend:=pytorch",
                         f"checkpoint:={ckpt}", "input_topic:=/test/launch_points",
                         "output_topic:=/test/launch_objects"], ros_env, launch_log)
    pub = None
    try:
        wait_for_line(launch_log, "ready:", timeout=120)
        pub = start_proc(["publish_clouds.py", "--topic", "/test/launch_points", "--plan", str(tmp_path / "plan.json"),
                          "--objects-topics", "/test/launch_objects"], ros_env, pub_log)
        assert pub.wait(120) == 0, pub_log.read_text() + launch_log.read_text()
    finally:
        if launch.poll() is None:
            launch.send_signal(2)  # SIGINT, as Ctrl-C on ros2 launch
            try:
                launch.wait(20)
            except subprocess.TimeoutExpired:
                pass
        stop(*(p for p in (pub, launch) if p is not None))
