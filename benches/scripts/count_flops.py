"""FLOPs of the paper-size models at batch 64, counted by PyTorch's FlopCounterMode on the
reference models of ../shared/bench/torchref (HARNet10 is checked against flowfm's by parity.py;
the reference U-Net has 3.18 M parameters against flowfm's 3.33 M, so its count estimates ours):
HARNet10 forward, U-Net forward, and one joint FlowFM training step (forward and backward).
Used by docs/scale-out.md.

    python3 benches/scripts/count_flops.py [../shared/bench/torchref]
"""
import sys, torch
sys.path.insert(0, sys.argv[1] if len(sys.argv) > 1 else "../shared/bench/torchref")
from models import HARNet, UNet1d
from torch.utils.flop_counter import FlopCounterMode
torch.set_num_threads(1)
B = 64
x = torch.randn(B, 3, 300)
enc = HARNet(width=1.0)
unet = UNet1d(z_dim=enc.dim)
print("params", sum(p.numel() for p in enc.parameters()), sum(p.numel() for p in unet.parameters()))
def count(fn):
    m = FlopCounterMode(display=False)
    with m:
        fn()
    return m.get_total_flops() / 1e9
enc.eval(); unet.eval()
with torch.no_grad():
    z = enc(x)
    print("enc fwd GFLOP", count(lambda: enc(x)))
    print("unet fwd GFLOP", count(lambda: unet(x, torch.rand(B), z)))
enc.train(); unet.train()
def joint():
    x0 = torch.randn_like(x); t = torch.rand(B)
    xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * x
    loss = (unet(xt, t, enc(x)) - (x - x0)).pow(2).mean()
    loss.backward()
print("joint train GFLOP (fwd+bwd)", count(joint))
