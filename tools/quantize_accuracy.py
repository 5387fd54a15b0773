#!/usr/bin/env python3
"""INT8 Q/DQ vs fp32 on held-out frames: the issue-14 accuracy check, outside the export job.

    python tools/quantize_accuracy.py --fp32-dir work_dirs/fp32 --out work_dirs/int8_acc --frames 200

--fp32-dir holds the two fp32 graphs (`awml-deploy export config/centerpoint.yaml --work-dir D`). Calibration and
guard frames come from export.quantize.calibration_seed (20000 by default); evaluation uses data.seed 10000
frames 0..N-1 (never used in training, never used for calibration: checked). Writes <out>/accuracy.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from awml_deploy_core.bundle import atomic_write_json
from awml_deploy_core.config import CenterPointModelConfig, DataConfig, EvaluateConfig, QuantizeConfig
from awml_deploy_core.evaluate import evaluate_backend, map_at, open_dataset, take_samples
from awml_deploy_core.export import quantize as qz
from awml_deploy_core.export import quantize_guard as qg
from awml_deploy_core.export.onnx_export import onnx_file_names


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fp32-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--seed", type=int, default=10_000)
    ap.add_argument("--method", default="percentile", choices=["minmax", "entropy", "percentile"])
    ap.add_argument("--calibration-frames", type=int, default=32)
    ap.add_argument("--guard-frames", type=int, default=48)
    ap.add_argument("--max-metric-drop", type=float, default=0.01)
    ap.add_argument("--graphs", nargs="+", choices=["encoder", "head"], default=None,
                    help="graphs to quantize (default: export.quantize.graphs' default)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("root",):
        logging.getLogger(noisy).setLevel(logging.INFO)
    cfg = CenterPointModelConfig()
    names = onnx_file_names(cfg)
    fp32 = {g: args.fp32_dir / names[g] for g in qz.GRAPHS}
    data = DataConfig(num_frames=args.frames, seed=args.seed)
    ev = EvaluateConfig(warmup=0)
    q = QuantizeConfig(enabled=True, method=args.method, calibration_frames=args.calibration_frames,
                       guard_frames=args.guard_frames, max_metric_drop=args.max_metric_drop,
                       **({"graphs": args.graphs} if args.graphs else {}))
    cache = args.out / "data"
    samples = take_samples(open_dataset(data, cache, cfg.class_names, progress=False), args.frames, progress=False)
    t0 = time.time()
    result = qg.quantize_with_guard(fp32, args.out, cfg, data, q, cache, ev, evaluation_samples=samples)
    t_quant = time.time() - t0
    print(("GUARD OK: " if result.ok else "GUARD FAILED: ") + result.reason, flush=True)
    if not result.ok:
        atomic_write_json(args.out / "accuracy.json", {"guard": result.to_dict()})
        return 1
    r32 = evaluate_backend("fp32", qz._pipeline(cfg, fp32["encoder"], fp32["head"]), samples, ev, progress=False)
    paths = result.pair.paths
    r8 = evaluate_backend("int8", qz._pipeline(cfg, paths["encoder"], paths["head"]), samples, ev, progress=False)
    m32, m8 = map_at(r32.metrics), map_at(r8.metrics)
    print(f"\n== fp32 ({args.frames} frames, seed {args.seed}) ==\n{r32.metrics.table()}")
    print(f"\n== INT8 Q/DQ ({args.method}) ==\n{r8.metrics.table()}")
    print(f"\nmAP@2m fp32 {m32:.4f}  INT8 {m8:.4f}  drop {m32 - m8:+.4f} (limit 0.01)")
    print("layers in float: " + ("; ".join(f"{k.graph}/{k.name}: {k.reason}" for k in result.kept_float) or "none"))
    print(f"recipe sha256 {result.pair.recipe_hash}; calibration fingerprint "
          f"{result.pair.recipe['calibration']['fingerprint']}; quantize + guard took {t_quant:.0f} s")
    atomic_write_json(args.out / "accuracy.json", {
        "command": " ".join(sys.argv), "frames": args.frames, "seed": args.seed,
        "map2_fp32": m32, "map2_int8": m8, "drop": m32 - m8, "fp32": r32.metrics.to_dict(),
        "int8": r8.metrics.to_dict(), "guard": result.to_dict(), "recipe": result.pair.recipe,
        "recipe_sha256": result.pair.recipe_hash})
    return 0 if m32 - m8 <= 0.01 else 1


if __name__ == "__main__":
    sys.exit(main())
