"""Fuse a real Landsat-8 PAN + MS pair shipped with ddif and compare with classical pansharpening.

    ddif demo                      # tables on stdout; quicklooks and tables in ./ddif_demo/

The pair is a 5.8 x 4 km crop of the Landsat-8 OLI scene LC80200392015216LGN00 (path 20, row 39,
2015-08-04; public domain, USGS): the real 15 m panchromatic band B8 with the 30 m blue, green and
red bands B2-B4, its BQA quality band, as delivered (16-bit DN, the PAN grid offset by half a PAN
pixel). It lies in the strip the shipped ``landsat8`` model held out of training. Two protocols:

- **reduced resolution** (Wald): MS and PAN degraded by 2 with the sensor's MTF, the original
  30 m bands the reference, on every 32 px crop free of cloud (BQA) and 4 px from it;
- **full resolution**: the native pair (no reference): D_lambda, D_s, HQNR on the same crops.

Next to the interpolated MS (EXP), GSA, MTF-GLP-HPM, Brovey, GS and GDAL's own weighted Brovey
(what ``gdal_pansharpen.py`` computes). Quicklooks of the whole crop fused at 15 m go to --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ddif.cli.common import ASSETS

if TYPE_CHECKING:
    from ddif.evaluation import RealScene

DEMO_MS = ASSETS / "landsat8_oli_demo_MS.tif"
DEMO_PAN = ASSETS / "landsat8_oli_demo_PAN.tif"
DEMO_QA = ASSETS / "landsat8_oli_demo_BQA.tif"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="ddif_demo", help="folder for quicklook PNGs and the metrics tables")
    p.add_argument("--model", default="landsat8", help="model to demonstrate (default: the shipped landsat8)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")


def demo_scene() -> RealScene:
    from ddif.evaluation import RealScene

    return RealScene(
        "Landsat-8 OLI LC80200392015216, real B8 PAN + B2-B4 (held out of training)",
        (str(DEMO_MS),),
        str(DEMO_PAN),
        2,
        "landsat8",
        ("B2", "B3", "B4"),
        65535.0,
        crop=32,
        qa=str(DEMO_QA),
        qa_generation="pre-collection",
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from ddif.data.scene import read_scene
    from ddif.evaluation import (
        band_bias,
        classical_methods,
        evaluate,
        markdown,
        real_full_set,
        real_reduced_set,
        write_csv,
    )
    from ddif.fuser import Fuser
    from ddif.models import load_model
    from ddif.models.cards import resolve_model
    from ddif.training.trainer import resolve_device
    from ddif.utils.io import atomic_write_text
    from ddif.utils.quicklook import band_limits, save_quicklook

    path, _ = resolve_model(args.model)
    model = load_model(str(path))
    scene = demo_scene()
    if model.config.bands != len(scene.band_names) or model.preset.data.ratio != scene.ratio:
        raise ValueError(
            f"model {args.model}: fuses {model.config.bands} bands at ratio {model.preset.data.ratio}; the demo pair "
            f"is {len(scene.band_names)} bands at ratio {scene.ratio} (use a Landsat-8 B2-B4 model)"
        )
    fuser = Fuser(model, steps=args.steps, device=resolve_device(args.device))
    r, gains = scene.ratio, scene.gains
    methods = classical_methods(r, gains)
    name = f"DDIF ({Path(path).stem}, {fuser.steps} steps)"
    methods[name] = lambda lms, pan, ms: fuser.fuse(lms, pan, seed=args.seed)
    out = Path(args.out)
    tables = []

    reduced = real_reduced_set(scene)
    rows, outputs = evaluate(methods, reduced, r, gains, return_outputs=True)
    assert reduced.gt is not None  # reduced resolution: the original bands are the reference
    for row in rows:
        row["bias % (B2/B3/B4)"] = " / ".join(f"{v:+.2f}" for v in band_bias(outputs[row["method"]], reduced.gt))
        row["s/image"] = row.pop("s/image")
    title = f"{scene.name}: reduced resolution (Wald, ratio {r}), {len(reduced)} crops of {scene.crop} px"
    tables.append(markdown(rows, title))
    write_csv(rows, out / "reduced_resolution.csv", {"scene": DEMO_MS.name})

    full = real_full_set(scene)
    full_rows = evaluate(methods, full, r, gains)
    title = f"{scene.name}: full resolution (15 m, no reference), {len(full)} crops"
    tables.append(markdown(full_rows, title))
    write_csv(full_rows, out / "full_resolution.csv", {"scene": DEMO_MS.name})
    text = "\n\n".join(tables)
    print(text)

    # the whole crop at 15 m, as `ddif fuse` reads it: quicklooks of EXP, GSA and DDIF
    _, lms, pan, _ = read_scene(DEMO_MS, DEMO_PAN, preset=model.preset)
    h, w = lms.shape[1] // r * r, lms.shape[2] // r * r  # whole MS pixels (GSA decimates lms)
    lms_t, pan_t = torch.from_numpy(lms[:, :h, :w])[None], torch.from_numpy(pan[:, :h, :w])[None]
    rgb = model.preset.data.rgb_bands
    limits = band_limits(lms_t[0], rgb)
    save_quicklook(lms_t[0], out / "exp_interpolated_ms.png", rgb, limits=limits)
    save_quicklook(pan_t[0], out / "pan.png", (0, 0, 0))
    save_quicklook(fuser.fuse(lms_t, pan_t, seed=args.seed)[0], out / "ddif.png", rgb, limits=limits)
    gsa = classical_methods(r, gains, ["gsa"])["gsa"]
    # GSA without the coarse MS estimates it from lms (the interpolators pass through its samples)
    save_quicklook(gsa(lms_t, pan_t, None)[0].clamp(0, 1), out / "gsa.png", rgb, limits=limits)
    atomic_write_text(out / "metrics.md", text + "\n")
    print(f"\nquicklooks (15 m, the whole {pan.shape[1]} x {pan.shape[2]} px crop) and tables in {out}/")
    return 0
