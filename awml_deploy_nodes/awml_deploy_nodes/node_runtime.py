"""The plumbing every model node of the package shares: ``centerpoint_node``, ``yolox_node`` and
``calibration_status_node`` differ only in their messages, their conversions and what they publish.

- :func:`read_params`: declare a node's parameter table read-only and validate it (typos refused by name);
- :func:`load_model`: parameters -> ``awml_deploy_core.loader.load_pipeline`` (the one loader of every family),
  errors naming the parameter at fault; :func:`with_model_overrides` re-thresholds a loaded model the way the
  loader's ``model_overrides`` do, when the values come from the loaded model's own config;
- :class:`Mailbox`: the one slot between the subscription callback and the worker (newest input wins; ``swap``
  hands back the replaced item, e.g. for a service call waiting on it);
- :class:`ModelNode`: an rclpy ``Node`` with the health counters (``NodeHealth`` on ``/diagnostics``), the
  InferenceStats publisher, the worker thread (one broad catch per frame: counted as internal_error, logged with a
  throttled traceback), throttled malformed-input warnings, message-lost events and publication-sequence gaps;
  a node adds statuses of its own to /diagnostics with :meth:`ModelNode.extra_statuses`;
- :func:`spin_main`: ``main()`` of a node: start-up failures are one line and exit 2 or 3 (startup.run_main),
  Ctrl-C and external shutdown end it cleanly, the worker and the backend are released; single-threaded
  (``rclpy.spin``) or, for a node with a waiting service callback, a multi-threaded executor.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
import traceback
from typing import Any, Callable

import rclpy
import rclpy.subscription
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from awml_deploy_core.errors import AwmlDeployError
from awml_deploy_msgs.msg import InferenceStats
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from std_msgs.msg import Header

from .diagnostics import NodeHealth
from .node_params import ParamError, ParamSpec, declare_read_only
from .startup import init_ros, run_main

MALFORMED_WARN_PERIOD_S = 5.0
ERROR_LOG_PERIOD_S = 10.0
GIL_SWITCH_INTERVAL_S = 0.0005
HANDOVER_WAIT_S = 0.005  # Mailbox.swap waits at most this long for an idle worker to take the item

# Sensor data, newest frame wins. Autoware's nodes keep the last 1; here the newest-wins choice is made after the
# cheap layout check in the callback (the mailbox), so the reader keeps a few samples: a burst of malformed
# messages right behind a good one must reach the callback (and be counted) instead of overwriting the good one
# inside the middleware (measured with clouds: 24 of 144 such messages reached a depth-1 reader).
INPUT_DEPTH = 32
INPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=INPUT_DEPTH, reliability=ReliabilityPolicy.BEST_EFFORT,
                       durability=DurabilityPolicy.VOLATILE)
OUTPUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)

# Iron and newer pass (message, MessageInfo) to two-argument subscription callbacks; Humble passes the message only.
CALLBACKS_WITH_INFO = hasattr(rclpy.subscription.Subscription, "CallbackType")


# --------------------------------------------------------------------------------------------------
# Parameters -> model
# --------------------------------------------------------------------------------------------------
def read_params(node: Node, specs: tuple[ParamSpec, ...], validate: Callable[[dict[str, Any]], Any]) -> Any:
    """Declare ``specs`` read-only on ``node`` and return ``validate(values)``; overrides (params file, -p) that
    name no declared parameter are typos and reach ``validate`` so that it refuses them by name."""
    values = declare_read_only(node, specs, dynamic_typing=True)
    overrides = getattr(node, "_parameter_overrides", {}) or {}
    for name, param in overrides.items():
        if not node.has_parameter(name) and not name.startswith("qos_overrides."):
            values[name] = getattr(param, "value", param)
    return validate(values)


def load_model(p: Any, default_checkpoint: str, family: str, model_overrides: dict[str, Any] | None = None) -> Any:
    """bundle_dir, else config, else checkpoint, else ``default_checkpoint`` -> a LoadedPipeline of ``family``.

    ``p`` has the shared parameters of node_params.model_params. A loader error names the parameter it came
    from; a model of another family is refused (exit 2): a camera node cannot run a lidar bundle.
    """
    from awml_deploy_core.loader import load_pipeline

    try:
        loaded = load_pipeline(p.bundle_dir or p.config or p.checkpoint or default_checkpoint, p.backend,
                               p.device or None, checkpoint=p.checkpoint or None, engine_precision=p.precision,
                               model_overrides=model_overrides, onnx_cache_dir=p.onnx_cache_dir or None)
    except AwmlDeployError as e:
        named = [n for n in ("checkpoint", "bundle_dir", "config") if getattr(p, n) and getattr(p, n) in str(e)]
        raise type(e)(f"parameter '{named[0]}': {e}" if named else str(e)) from None
    if loaded.family.name != family:
        loaded.close()
        given = next((n for n in ("bundle_dir", "config", "checkpoint") if getattr(p, n)), "checkpoint")
        raise ParamError(f"parameter '{given}': {loaded.source} holds a {loaded.family.name} model; this node runs "
                         f"{family} models")
    return loaded


def with_model_overrides(loaded: Any, overrides: dict[str, Any]) -> Any:
    """``loaded`` with post-processing keys of its model config replaced: the family's pipeline rebuilt on the same
    runners (what ``load_pipeline(model_overrides=...)`` builds), for values read from the loaded config itself."""
    from awml_deploy_core.config import validate as validate_config

    model = loaded.cfg.model
    if all(getattr(model, k) == v for k, v in overrides.items()):
        return loaded
    wrong = sorted(set(overrides) - set(loaded.family.postprocess_keys))
    if wrong:
        raise ParamError(f"model overrides {wrong} would change the graphs; only post-processing keys may change")
    model = validate_config(loaded.family.model_config, {**model.model_dump(), **overrides}, source="node overrides")
    pipeline = loaded.family.make_pipeline(model, loaded.pipeline.runners, loaded.device)
    return dataclasses.replace(loaded, pipeline=pipeline, cfg=loaded.cfg.model_copy(update={"model": model}))


def as_header(header: Any) -> Header:
    """A std_msgs Header of a header-like object (e.g. cloud_cdr.Header of a raw subscription's cloud)."""
    if isinstance(header, Header):
        return header
    return Header(stamp=Time(sec=header.stamp.sec, nanosec=header.stamp.nanosec), frame_id=header.frame_id)


# --------------------------------------------------------------------------------------------------
# Callback -> worker
# --------------------------------------------------------------------------------------------------
class Mailbox:
    """One slot between the subscription callback and the worker: a newer item replaces a waiting one.

    Hand-over: when the worker is idle (waiting in ``take``), ``swap`` waits until it has taken the item (at most
    HANDOVER_WAIT_S). The callback's thread is blocked meanwhile, GIL released, so the worker starts at once;
    without the wait it had to win the GIL from the executor thread's spin loop, which cost 0.3 ms median per
    frame with ``time.sleep(0)`` as a hint, and up to the interpreter's switch interval without one. A busy
    worker is not waited for: the item waits in the slot.
    """

    def __init__(self) -> None:
        lock = threading.Lock()
        self._filled = threading.Condition(lock)  # the worker waits for an item
        self._taken = threading.Condition(lock)  # swap waits for the idle worker to take it
        self._item: Any = None
        self._received = 0.0  # time.perf_counter() when the waiting item was received
        self._closed = False
        self._idle = False  # the worker is waiting in take()

    def put(self, item: Any, received: float | None = None) -> bool:
        """Store `item`; True when it replaced one the worker had not taken yet (a dropped input)."""
        return self.swap(item, received) is not None

    def swap(self, item: Any, received: float | None = None) -> Any:
        """Store `item`; return the one it replaced (the worker had not taken it), else None.
        ``received``: time.perf_counter() when the input arrived (default: now), for InferenceStats.queue_ms."""
        with self._filled:
            replaced, self._item = self._item, item
            self._received = time.perf_counter() if received is None else received
            self._filled.notify()
            if self._idle:
                self._taken.wait_for(lambda: self._item is not item or self._closed, HANDOVER_WAIT_S)
        return replaced

    def take(self) -> Any:
        """The newest item (waits for one); None once closed."""
        return self.take_timed()[0]

    def take_timed(self) -> tuple[Any, float]:
        """(the newest item, time.perf_counter() when it was received); waits for one; (None, 0.0) once closed."""
        with self._filled:
            while self._item is None and not self._closed:
                self._idle = True
                self._filled.wait()
            self._idle = False
            if self._closed:
                return None, 0.0
            item, self._item = self._item, None
            self._taken.notify_all()
            return item, self._received

    def close(self) -> None:
        with self._filled:
            self._closed = True
            self._filled.notify_all()
            self._taken.notify_all()


def event_callbacks(on_lost: Any) -> Any:
    """Subscription event callbacks with message_lost (rclpy.event_handler from Iron, rclpy.qos_event on Humble)."""
    try:
        from rclpy.event_handler import SubscriptionEventCallbacks
    except ImportError:  # Humble
        from rclpy.qos_event import SubscriptionEventCallbacks
    try:
        return SubscriptionEventCallbacks(message_lost=on_lost)
    except TypeError:  # a distribution without the message_lost event
        return None


class ModelNode(Node):
    """Health, diagnostics, InferenceStats, worker thread and input bookkeeping of a model node.

    A subclass reads its parameters into ``self.params`` (with ``diagnostics_period_s``), calls
    :meth:`start_runtime` with its NodeHealth, subscribes with callbacks from :meth:`input_callback`, puts what
    the worker must process into ``self._mailbox`` and implements :meth:`process_item` (run in the worker).
    """

    params: Any
    model: Any

    def start_runtime(self, health: NodeHealth, worker_name: str) -> None:
        self.health = health
        self._stats_pub = self.create_publisher(InferenceStats, "~/debug/inference_stats", OUTPUT_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", OUTPUT_QOS)
        self._mailbox = Mailbox()
        self._queue_ms = 0.0  # the frame being processed: received -> taken by the worker (worker thread only)
        self._worker = threading.Thread(target=self._work, name=worker_name, daemon=True)
        self._worker.start()
        self._last_seq: dict[bytes, int] = {}  # per publisher: last publication sequence number seen
        self._lost_total = 0  # the middleware's cumulative message-lost count
        self.health.sequence_gaps_known = CALLBACKS_WITH_INFO
        self._timer = self.create_timer(self.params.diagnostics_period_s, self.publish_diagnostics)

    def subscribe(self, msg_type: Any, topic: str, on_msg: Callable[[Any], None], raw: bool = False) -> Any:
        """A sensor-data subscription whose callback also counts sequence gaps (Iron+) and message-lost events.
        ``raw``: ``on_msg`` gets the serialized bytes (rclpy's raw subscription, Humble and newer)."""
        if CALLBACKS_WITH_INFO:
            def callback(msg: Any, info: Any) -> None:
                on_msg(msg)
                self._track_sequence(info)
        else:
            callback = on_msg
        return self.create_subscription(msg_type, topic, callback, INPUT_QOS,
                                        event_callbacks=event_callbacks(self._on_lost), raw=raw)

    # ------------------------------------------------------------------ executor thread
    def _track_sequence(self, info: Any) -> None:
        """Iron and newer: the writer's sequence number shows inputs the middleware dropped before the callback."""
        seq = info.get("publication_sequence_number")
        gid = info.get("publisher_gid")
        if seq is None or gid is None:
            return
        key = bytes(gid.get("data", b""))
        last = self._last_seq.get(key)
        self._last_seq[key] = seq
        if last is not None and seq > last + 1:
            self.health.on_input_gap(seq - last - 1)

    def _on_lost(self, info: Any) -> None:
        # total_count is cumulative; its change field has been seen to carry garbage (2**64 - 2**31 + ...), so
        # the increase is computed here and never negative.
        total = getattr(info, "total_count", None)
        if isinstance(total, int) and 0 <= total < 2**31:
            change, self._lost_total = max(0, total - self._lost_total), max(self._lost_total, total)
        else:
            change = 1
        self.health.on_lost(change)

    def on_malformed(self, e: Any, kind: str | None = None) -> None:
        """Count a malformed input by ``kind`` (default ``e.kind``) and warn (throttled); ``e`` says what it was."""
        total = self.health.on_malformed(kind or e.kind)
        self.get_logger().warning(f"dropped a {e} [{total} malformed {self.health.noun} so far; counts per kind on "
                                  f"/diagnostics]", throttle_duration_sec=MALFORMED_WARN_PERIOD_S)

    def callback_failed(self, what: str) -> None:
        """Same policy as the worker: an exception escaping a callback would stop the executor, and with it the
        node. Counted as internal_error and logged with its traceback (throttled). Call from an except block."""
        self.health.on_internal_error()
        self.get_logger().error(f"{what} failed (counted as internal_error, node continues):\n"
                                f"{traceback.format_exc()}", throttle_duration_sec=ERROR_LOG_PERIOD_S)

    def extra_statuses(self) -> list[Any]:
        """A node's own DiagnosticStatus entries, published after NodeHealth's (none by default)."""
        return []

    def publish_diagnostics(self) -> None:
        msg = self.health.report(self.get_clock().now().to_msg())
        msg.status.extend(self.extra_statuses())
        self._diag_pub.publish(msg)

    # ------------------------------------------------------------------ worker thread
    def process_item(self, item: Any) -> None:  # pragma: no cover - every node implements it
        raise NotImplementedError

    def _work(self) -> None:
        while True:
            item, received = self._mailbox.take_timed()
            if item is None:
                return
            self._queue_ms = (time.perf_counter() - received) * 1e3
            try:
                self.process_item(item)
            except Exception:  # noqa: BLE001
                # The one broad catch: whatever fails inside one frame (a backend error, a bug hit by an odd
                # input) must not stop a perception node on a vehicle. Counted as internal_error, reported with
                # its traceback (throttled: a repeating failure does not flood the log), next input processed.
                if not self.context.ok():
                    return  # shutting down: publishing into a finished context fails, and that is expected
                self.health.on_internal_error()
                self.get_logger().error(f"frame failed (counted as internal_error, node continues):\n"
                                        f"{traceback.format_exc()}", throttle_duration_sec=ERROR_LOG_PERIOD_S)

    def now_ns(self) -> int:
        """The node's ROS time in nanoseconds. With sim time off that is the system clock, read directly: a frame's
        latency stamp then costs a few microseconds instead of Clock.now()'s Time object (~70 us measured in the
        node after an inference)."""
        clock = self.get_clock()  # a ROSClock; without the property (not seen so far) it is asked as before
        return clock.now().nanoseconds if getattr(clock, "ros_time_is_active", True) else time.time_ns()

    def publish_stats(self, header: Any, timings_ms: dict[str, float], total_ms: float, latency_ms: float,
                      input_size: int, output_count: int) -> None:
        """InferenceStats of one processed input; ``timings_ms`` has preprocess, inference and postprocess.
        ``header``: a std_msgs Header, or anything with ``stamp.sec``, ``stamp.nanosec`` and ``frame_id``.
        queue_ms is the worker's: received (the time given to the mailbox) -> taken."""
        stats = InferenceStats()
        stats.header = as_header(header)
        stats.backend = self.model.backend
        stats.precision = self.model.precision
        stats.preprocess_ms = float(timings_ms["preprocess"])
        stats.inference_ms = float(timings_ms["inference"])
        stats.postprocess_ms = float(timings_ms["postprocess"])
        stats.total_ms = float(total_ms)
        stats.queue_ms = float(self._queue_ms)
        stats.pipeline_latency_ms = float(latency_ms)
        stats.input_size = int(input_size)
        stats.output_count = int(output_count)
        self._stats_pub.publish(stats)

    # ------------------------------------------------------------------ shutdown
    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker, then release the backend (sessions, engines, device memory)."""
        self._mailbox.close()
        self._worker.join(timeout)
        self.model.close()


# --------------------------------------------------------------------------------------------------
# main()
# --------------------------------------------------------------------------------------------------
def spin_main(prog: str, make_node: Callable[[], ModelNode], args: list[str] | None, threads: int = 1) -> int:
    """Run a model node until Ctrl-C or shutdown; start-up failures: one line on stderr, exit 2 or 3.

    ``threads`` > 1: a MultiThreadedExecutor of that many threads (a node whose service callback waits for the
    worker puts it in a callback group of its own), else the single-threaded ``rclpy.spin``."""
    # The executor thread hands each input to the worker thread; both need the GIL only for short Python stretches
    # (the model's kernels release it). A shorter forced-switch interval than Python's 5 ms keeps that hand-over
    # from waiting on the other thread's time slice: measured here under CPU load, centerpoint_node's own part of
    # the latency went from 2.6-6.8 ms to 1.7-4.4 ms median (3 interleaved runs each), at no cost to the pipeline.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    return run_main(prog, lambda: _spin(make_node, args, threads))


def _spin(make_node: Callable[[], ModelNode], args: list[str] | None, threads: int) -> int:
    init_ros(args)
    node = make_node()
    try:
        from rclpy.executors import ExternalShutdownException
    except ImportError:  # very old rclpy
        ExternalShutdownException = KeyboardInterrupt  # noqa: N806
    executor = None
    if threads > 1:
        from rclpy.executors import MultiThreadedExecutor

        executor = MultiThreadedExecutor(num_threads=threads)
        executor.add_node(node)
    try:
        if executor is None:
            rclpy.spin(node)
        else:
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.close()
        if executor is not None:
            executor.shutdown()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
