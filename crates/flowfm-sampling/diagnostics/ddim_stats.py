import h5py, numpy as np
def load(p):
    with h5py.File(p,'r') as f:
        return np.array(f['x'])
import os
real = load(os.environ['STORE'])[:48]
def stats(x):
    return f"per-window sd {x.std(axis=2).mean():7.3f}  |window mean| {np.abs(x.mean(axis=2)).mean():6.3f}  max|x| {np.abs(x).max():8.2f}  sd of first difference {np.diff(x, axis=2).std():7.3f}"
print("real          ", stats(real))
for r in ['dq40','dq400']:
  for name in ['ddpm','ddim10','ddim50','ddim50eta1','ddim1000']:
    try: print(f"{r:5s} {name:12s}", stats(load(f'diag/{r}-{name}.h5')))
    except Exception as e: print(r, name, e)
