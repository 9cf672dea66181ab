"""One short check of the GPU routes, for a machine with a CUDA GPU (CI has none).

    python benchmarks/gpu_check.py            # ~1-2 min; prints PASS/FAIL lines and writes results/gpu_check.json

1. ``device="auto"`` on a machine where torch sees a GPU places the compiled torch.statevector on CUDA.
2. The compiled simulator on CUDA equals the CPU one: loss, gradient and a Hessian-vector product of the
   Kawase preset (4 patches, L = 10, 64 samples, float64), to 1e-10 (float64 rounding in another order).
3. Time of the P = 4, L = 50, B = 300 gradient and steady HVP on CUDA (float64 and float32).
4. ``lightning.gpu``, if installed: a first-order gradient equal to the CPU compiled one to 1e-8.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

import qlandscape as ql


def main() -> None:
    out: dict = {}
    if not torch.cuda.is_available():
        print("FAIL: torch sees no CUDA GPU")
        return
    out["gpu"] = torch.cuda.get_device_name(0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 14, 14, generator=g, dtype=torch.float64) * (math.pi / 4)
    y = torch.randint(0, 10, (64,), generator=g)
    auto = ql.PatchQNN("kawase2025", n_patches=4, layers=10)
    on_cuda = auto.device_choice.torch_device.startswith("cuda") and next(auto.parameters()).is_cuda
    print(("PASS" if on_cuda else "FAIL") + f": auto -> {auto.device_choice.reason}")
    cpu = ql.PatchQNN("kawase2025", n_patches=4, layers=10, simulator="compiled", torch_device="cpu").double()
    gpu = ql.PatchQNN("kawase2025", n_patches=4, layers=10, simulator="compiled", torch_device="cuda").double()
    gpu.load_state_dict(cpu.state_dict())
    oc = ql.Objective(cpu, "cross_entropy", (x, y))
    og = ql.Objective(gpu, "cross_entropy", (x, y))
    v = torch.randn(oc.n_params, generator=g, dtype=torch.float64)
    diffs = dict(loss=abs(oc.loss() - og.loss()),
                 grad=float((oc.gradient() - og.gradient().cpu()).abs().max()),
                 hvp=float((oc.hvp(v) - og.hvp(v.cuda()).cpu()).abs().max()))
    ok = all(d < 1e-10 for d in diffs.values())
    print(("PASS" if ok else "FAIL") + f": CUDA == CPU (max abs differences {diffs})")
    out["cuda_vs_cpu"] = diffs
    for dtype in (torch.float64, torch.float32):
        m = ql.PatchQNN("kawase2025", n_patches=4, layers=50, simulator="compiled", torch_device="cuda").to(dtype)
        xb = torch.rand(300, 14, 14, generator=g, dtype=torch.float64) * (math.pi / 4)
        yb = torch.randint(0, 10, (300,), generator=g)
        o = ql.Objective(m, "cross_entropy", (xb, yb), dtype=dtype)
        vv = torch.randn(o.n_params, generator=g, dtype=dtype).cuda()
        times = {}
        for name, f in (("gradient", o.gradient), ("hvp_first", lambda: o.hvp(vv)), ("hvp_steady", lambda: o.hvp(vv))):
            torch.cuda.synchronize()
            t = time.perf_counter()
            f()
            torch.cuda.synchronize()
            times[name] = time.perf_counter() - t
        print(f"INFO: P=4 L=50 B=300 {str(dtype).replace('torch.', '')} on CUDA: {times}")
        out[f"timing_{dtype}"] = times
    try:
        light = ql.PatchQNN("kawase2025", n_patches=4, layers=10, device="lightning.gpu", order=1).double()
        light.load_state_dict(cpu.state_dict())
        d = float((ql.Objective(light, "cross_entropy", (x, y)).gradient() - oc.gradient()).abs().max())
        print(("PASS" if d < 1e-8 else "FAIL") + f": lightning.gpu gradient == compiled CPU ({d:.1e})")
        out["lightning_gpu_grad_diff"] = d
    except ql.quantum.devices.DeviceUnavailableError as exc:
        print(f"INFO: lightning.gpu not available ({exc})")
    path = Path(__file__).resolve().parent / "results" / "gpu_check.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
