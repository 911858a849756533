"""PyTorch's numbers for the work flowfm's throughput example measures, on a CUDA GPU.

    python3 gpu/torch_peer.py --models-dir DIR [--batch 64] [--reps 20] [--width 1.0]

DIR holds `models.py`, the PyTorch peer models of the CPU comparison
(`../shared/bench/torchref/models.py`; `cargo xtask gpu-bundle` copies it into the bundle).
The work is the CPU peer's (forward, backward and an AdamW step; graph-free evaluation; the joint
HARNet10 + U-Net flow-matching step; one U-Net evaluation per window), in f32 on `cuda:0`, timed
between `torch.cuda.synchronize()` calls after two warm-up calls. TF32 matrix products stay off,
as in flowfm (candle leaves them off). One JSON object per line, keys as the throughput
example's (`what`, `width`, `batch`, `windows_per_s` or `ms_per_nfe_per_window`).
"""
import argparse
import json
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models-dir", required=True)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--width", type=float, nargs="+", default=[1.0, 0.25])
    a = ap.parse_args()
    sys.path.insert(0, a.models_dir)
    import torch
    from models import HARNet, UNet1d

    if not torch.cuda.is_available():
        sys.exit("torch_peer: PyTorch sees no CUDA device")
    dev = torch.device("cuda:0")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    def timeit(fn):
        fn()
        fn()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(a.reps):
            fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) / a.reps

    torch.manual_seed(0)
    B = a.batch
    x = torch.randn(B, 3, 300, device=dev)
    for width in a.width:
        enc = HARNet(width=width).to(dev)
        opt = torch.optim.AdamW(enc.parameters(), 1e-4)

        def enc_step():
            opt.zero_grad()
            enc(x).pow(2).mean().backward()
            opt.step()

        s = timeit(enc_step)
        print(json.dumps({"device": "cuda:0", "what": "encoder_train_step", "width": width,
                          "batch": B, "s_per_step": s, "windows_per_s": B / s}), flush=True)
        enc.eval()
        with torch.no_grad():
            s = timeit(lambda: enc(x))
        enc.train()
        print(json.dumps({"device": "cuda:0", "what": "encoder_forward_eval", "width": width,
                          "batch": B, "s_per_step": s, "windows_per_s": B / s}), flush=True)

    enc = HARNet(width=1.0).to(dev)
    unet = UNet1d(z_dim=enc.dim).to(dev)
    opt2 = torch.optim.AdamW(list(enc.parameters()) + list(unet.parameters()), 1e-4)

    def fm_step():
        opt2.zero_grad()
        x0 = torch.randn_like(x)
        t = torch.rand(B, device=dev)
        xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * x
        loss = (unet(xt, t, enc(x)) - (x - x0)).pow(2).mean()
        loss.backward()
        opt2.step()

    s = timeit(fm_step)
    print(json.dumps({"device": "cuda:0", "what": "joint_train_step", "width": 1.0, "batch": B,
                      "s_per_step": s, "windows_per_s": B / s}), flush=True)
    unet.eval()
    enc.eval()
    with torch.no_grad():
        z = enc(x)
        t = torch.full((B,), 0.5, device=dev)
        s = timeit(lambda: unet(x, t, z))
    print(json.dumps({"device": "cuda:0", "what": "unet_nfe_forward", "width": 1.0, "batch": B,
                      "s_per_step": s, "ms_per_nfe_per_window": 1000 * s / B}), flush=True)


if __name__ == "__main__":
    main()
