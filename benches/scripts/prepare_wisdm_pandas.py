"""The obvious pandas + numpy + h5py way to prepare WISDM 2019 watch accelerometer data.

Does the same work as `flowfm prepare --dataset wisdm2019`: parse every
`data_<subject>_accel_watch.txt.gz`, convert m/s^2 to g, interpolate each activity recording onto a
uniform 30 Hz grid (np.interp on the time axis), cut 10 s windows (300 samples, no overlap), label
each window by majority, and write x (N, 3, 300) f32, y, subject to a gzip-compressed HDF5 file.
It does not low-pass filter (upsampling from 20 Hz does not need it). Used only by
`cargo xtask bench-prepare` as the comparison point.

usage: python3 prepare_wisdm_pandas.py WISDM_DIR OUT.h5
"""
import glob
import os
import sys

import h5py
import numpy as np
import pandas as pd

G = 9.80665
RATE = 30.0
WIN = 300


def main(root, out):
    files = sorted(glob.glob(os.path.join(root, "**", "raw", "watch", "accel", "*.txt*"), recursive=True))
    xs, ys, subjects = [], [], []
    codes = {}
    for f in files:
        df = pd.read_csv(f, header=None, names=["subject", "activity", "t", "x", "y", "z"],
                         lineterminator="\n")
        df["z"] = df["z"].astype(str).str.rstrip(";").astype(float)
        for (subject, activity), g in df.groupby(["subject", "activity"], sort=False):
            g = g.sort_values("t").drop_duplicates("t")
            t = (g["t"].to_numpy() - g["t"].iloc[0]) / 1e9
            if len(t) < 2:
                continue
            grid = np.arange(0.0, t[-1], 1.0 / RATE)
            sig = np.stack([np.interp(grid, t, g[c].to_numpy() / G) for c in "xyz"])
            label = codes.setdefault(activity, len(codes))
            for s in range(0, sig.shape[1] - WIN + 1, WIN):
                xs.append(sig[:, s:s + WIN].astype(np.float32))
                ys.append(label)
                subjects.append(subject)
    x = np.stack(xs)
    with h5py.File(out + ".tmp", "w") as h:
        h.create_dataset("x", data=x, chunks=(64, 3, WIN), compression="gzip", compression_opts=1, shuffle=True)
        h.create_dataset("y", data=np.asarray(ys, dtype=np.int64))
        h.create_dataset("subject", data=np.asarray(subjects, dtype=np.int64))
        h.attrs["sample_rate_hz"] = RATE
    os.replace(out + ".tmp", out)
    print(f"{len(files)} files, {x.shape[0]} windows")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
