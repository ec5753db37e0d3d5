"""Features files in the original research project's HDF5 layout, written by hand (not by our
writer) so the tests check that vidclass reads what the original extraction script wrote."""
import json

import h5py
import numpy as np

MAPPING = {"Animation": 0, "Flat_Content": 1, "Gaming": 2, "Natural_Content": 3}


def write_original_features(path, feats: np.ndarray, lengths: np.ndarray, labels: np.ndarray) -> None:
    n, t, d = feats.shape
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=feats.astype(np.float32), compression="gzip")
        f.create_dataset("labels", data=np.asarray(labels, np.int64))
        f.create_dataset("num_frames", data=np.asarray(lengths, np.int32))
        f.attrs.update({"num_videos": n, "max_frames": t, "feature_dim": d,
                        "category_mapping": json.dumps(MAPPING), "multi_scale": True})
