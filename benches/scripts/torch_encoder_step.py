"""PyTorch's HARNet10 training step alone (batch 64, 3 x 300, AdamW, 2 threads), for comparing peak
resident memory with flowfm's (`throughput --encoder-step-only`) under `/usr/bin/time -v`.

    /usr/bin/time -v python3 benches/scripts/torch_encoder_step.py ../shared/bench/torchref

The argument is the folder of the peer models (`models.py`). Runs one warm-up and three timed
steps, the same work as `torchref/bench.py`'s `encoder_train_step`.
"""
import sys
import time

import torch

sys.path.insert(0, sys.argv[1])
from models import HARNet  # noqa: E402

torch.set_num_threads(2)
torch.manual_seed(0)
x = torch.randn(64, 3, 300)
enc = HARNet(width=1.0)
opt = torch.optim.AdamW(enc.parameters(), 1e-4)


def step():
    opt.zero_grad()
    enc(x).pow(2).mean().backward()
    opt.step()


step()
t0 = time.perf_counter()
for _ in range(3):
    step()
print(f"{{\"what\": \"encoder_train_step\", \"s_per_step\": {(time.perf_counter() - t0) / 3:.4f}}}")
