"""Driver for compute-sanitizer (memcheck / racecheck) on the CUDA CSM op: odd and non-square
sizes, fp16 / bf16 / fp32, forward and both backward paths (with and without the kept
convolution), batch 1 and 3, non-contiguous inputs. Exits 0 when every call returned and matched
the reference loosely (the numerics are checked by the tests; this is about memory errors)."""
from __future__ import annotations

import sys

import torch

from ddif.kernels import style_conv as sc


def main() -> int:
    if not torch.cuda.is_available():
        print("csm_sanitize: no CUDA device")
        return 2
    if not sc.fused_available("cuda"):
        print(f"csm_sanitize: the CUDA CSM kernels are not live: {sc._status()}")
        return 2
    dev = torch.device("cuda")
    g = torch.Generator(device="cpu").manual_seed(0)
    worst = 0.0
    cases = [(1, 5, 7, 9, 11), (3, 16, 32, 13, 6), (2, 33, 17, 31, 29)]
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for b, cin, cout, h, w in cases:
            for keep_conv_in in (0, 1 << 30):          # both backward paths: recompute vs kept conv
                sc.CONFIG.keep_conv_min_in_channels = keep_conv_in
                x = torch.randn(b, cin, h, w + 1, generator=g).to(dev, dtype)[..., :w]    # non-contiguous
                x.requires_grad_()
                wt = (torch.randn(cout, cin, 1, 1, generator=g) * 0.1).to(dev, dtype).requires_grad_()
                bias = torch.randn(cout, generator=g).to(dev, dtype).requires_grad_()
                scale = torch.randn(b, cout, h, w, generator=g).to(dev, dtype).requires_grad_()
                shift = torch.randn(b, cout, h, w, generator=g).to(dev, dtype)
                out = sc.style_modulated_conv(x, wt, bias, scale, shift)
                out.float().square().mean().backward()
                ref = sc.style_modulated_conv_ref(x.detach().float(), wt.detach().float(), bias.detach().float(),
                                                  scale.detach().float(), shift.float())
                worst = max(worst, float((out.float() - ref).abs().max() / (ref.abs().max() + 1e-6)))
    torch.cuda.synchronize()
    print(f"csm_sanitize: {3 * len(cases) * 2} forward + backward calls done, worst relative error {worst:.2e}")
    return 0 if worst < 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
