#!/bin/bash
# DDIM diagnosis: quick-profile diffusion runs trained 40 and 400 steps on UCI HAPT, same 48 windows, reconstruct mode, no clipping.
# The runs: configs/diffusion-quick.toml with `steps` (and `checkpoint_every`) set to 40 and 400,
#   flowfm pretrain --config dq40.toml --store $STORE --out $RUNS/dq40   (and dq400)
# Then: STORE=... RUNS=... ./ddim_diag.sh && STORE=... python3 ddim_stats.py
F=${FLOWFM:-target/release/flowfm}
S=${STORE:?a window store, e.g. reports/quick/work/stores/uci_hapt.h5}
mkdir -p diag
for R in dq40 dq400; do
run() { $F generate --quiet --run ${RUNS:-runs}/$R --store $S --limit 48 --batch 16 --output diag/$R-$1.h5 "${@:2}" 2>&1 | tail -1; }
run ddpm --sampler ddpm
run ddim10 --sampler ddim --steps 10
run ddim50 --sampler ddim --steps 50
run ddim50eta1 --sampler ddim --steps 50 --eta 1
run ddim1000 --sampler ddim --steps 1000
done
