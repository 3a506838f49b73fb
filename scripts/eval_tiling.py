"""Is a checkpoint right at any tile size? Wald-protocol quality (ratio 4, 10 DDIM steps, seed 0)
of 32 px, 64 px, 128 px tiles and whole-image sampling next to GSA and MTF-GLP-HPM, with the
per-band mean bias in DN, on three held-out sets of the Landsat-8 scene the shipped checkpoint is
trained on (the test strip, columns 0-256, and the validation strip, columns 256-560, which
training never sees):

- ``demo``: the demo crop, PAN = 0.1 B2 + 0.6 B3 + 0.3 B4 (the training data's weights);
- ``val4``: 4 crops of 256 px from the validation strip, same PAN weights;
- ``other8``: 8 crops of 256 px from both strips with a PAN of other weights, 0.3 / 0.4 / 0.3.

    python scripts/eval_tiling.py [CKPT] [--sets demo,val4,other8] [--json OUT.json]

Prints a Markdown table. One thread (about 10 minutes on a 2-core x86-64 CPU for all sets).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SCENE = Path(os.environ.get("DDIF_SHARED", REPO.parent / "shared")) / (
    "data/landsat8-scene/LC08_L1TP_224078_20200518_20200518_01_RT.TIF"
)
MAX_DN = 32767.0
CROP = 256
SETS = {
    "demo": ([(800, 0)], (0.1, 0.6, 0.3)),
    "val4": ([(300, 280), (700, 280), (1100, 280), (1500, 280)], (0.1, 0.6, 0.3)),
    "other8": (
        [(128, 0), (384, 0), (1088, 0), (1344, 0), (192, 280), (576, 280), (960, 280), (1344, 280)],
        (0.3, 0.4, 0.3),
    ),
}
TILINGS = {"32 px tiles": (32, 8), "64 px tiles": (64, 16), "128 px tiles": (128, 16), "whole image": (0, 0)}


def triplets(origins: list[tuple[int, int]], pan_weights: tuple[float, ...]) -> tuple[torch.Tensor, ...]:
    """(gt, ms, lms, pan) of fill-free 256 px crops: the Wald triplet of ddif.data.degradation
    (MS degraded with the Landsat-8 nominal MTF, interpolated back; PAN synthesised from the
    reference bands)."""
    from ddif.data.degradation import Degradation, wald_triplet
    from ddif.data.raster import nodata_mask, read_raster

    degradation = Degradation.nominal("landsat8", 3, 4)
    out = []
    for row, col in origins:
        raster = read_raster(SCENE, window=(row, col, CROP, CROP))
        if nodata_mask(raster.array, [raster.nodata, 0]).any():
            raise ValueError(f"{SCENE}: crop at row {row}, column {col} holds fill pixels")
        gt = torch.from_numpy(raster.array.astype("float32"))[None] / MAX_DN
        rr = wald_triplet(gt, None, degradation, pan_weights)
        out.append((gt, rr.ms, rr.lms, rr.pan))
    return tuple(torch.cat([t[i] for t in out]) for i in range(4))


def evaluate(ckpt: str, sets: list[str]) -> dict[str, dict[str, dict]]:
    from ddif import metrics
    from ddif.baselines import BASELINES
    from ddif.fuser import Fuser
    from ddif.models import DDIF

    model = DDIF.from_pretrained(ckpt)
    results: dict[str, dict[str, dict]] = {}
    for name in sets:
        origins, weights = SETS[name]
        gt, ms, lms, pan = triplets(origins, weights)
        methods = {
            "GSA": lambda: BASELINES["gsa"](lms, pan, ms=ms, ratio=4, sensor="landsat8"),
            "MTF-GLP-HPM": lambda: BASELINES["mtf_glp_hpm"](lms, pan, ms=ms, ratio=4, sensor="landsat8"),
        }
        for label, (size, overlap) in TILINGS.items():
            methods[f"DDIF, {label}"] = lambda s=size, o=overlap: Fuser(model, tile_size=s, tile_overlap=o).fuse(
                lms, pan, seed=0
            )
        rows = {}
        for label, run in methods.items():
            fused = run().clamp(0, 1)
            scores = metrics.reduced_resolution_metrics(fused, gt, ratio=4, block_size=32)
            row = {k: float(torch.as_tensor(scores[k]).double().mean()) for k in ("SAM", "ERGAS", "Q2n")}
            row["bias_dn"] = [float(b) for b in (fused - gt).mean(dim=(0, 2, 3)) * MAX_DN]
            rows[label] = row
            print(f"{name:7s} {label:22s} SAM {row['SAM']:.4f} ERGAS {row['ERGAS']:.4f} Q2n {row['Q2n']:.4f}", flush=True)
        results[name] = rows
    return results


def markdown(results: dict[str, dict[str, dict]]) -> str:
    lines = ["| set | sampling | SAM ↓ | ERGAS ↓ | Q2n ↑ | bias DN |", "|---|---|---|---|---|---|"]
    for name, rows in results.items():
        for i, (label, r) in enumerate(rows.items()):
            bias = " / ".join(f"{b:.1f}" for b in r["bias_dn"])
            lines.append(
                f"| {name if i == 0 else ''} | {label} | {r['SAM']:.4f} | {r['ERGAS']:.4f} | {r['Q2n']:.4f} | {bias} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt", nargs="?", default=str(REPO / "ddif" / "assets" / "landsat_small.pt"))
    parser.add_argument("--sets", default="demo,val4,other8")
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sets = [s for s in args.sets.split(",") if s]
    unknown = sorted(set(sets) - set(SETS))
    if unknown:
        parser.error(f"unknown sets {unknown}; known: {sorted(SETS)}")
    results = evaluate(args.ckpt, sets)
    print(markdown(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
