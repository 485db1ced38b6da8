"""A stand-in for transformers 5.17's PIL image processor, for testing make_image_goldens.py plumbing on a
machine without transformers. Transcribed from image_processing_pil_qwen2_vl.py / image_processing_backends.py
/ image_transforms.py (5.x): convert_to_rgb, smart_resize, PIL resize BICUBIC, rescale (float64 -> float32),
normalize (float32), temporal padding, patchify."""
import numpy as np
from PIL import Image
from .models.qwen2_vl.image_processing_qwen2_vl import smart_resize

__version__ = "fake-5.17"

class Qwen2VLImageProcessorPil:
    backend = "pil"
    def __init__(self, **kw):
        self.kw = kw
    def __call__(self, images, return_tensors=None):
        kw = self.kw
        P, T, M = kw["patch_size"], kw["temporal_patch_size"], kw["merge_size"]
        allp, grids = [], []
        for im in images:
            if im.mode != "RGB":
                im = im.convert("RGB")
            a = np.array(im).transpose(2, 0, 1)
            H, W = a.shape[1:]
            if kw.get("do_resize", True):
                rh, rw = smart_resize(H, W, factor=P * M, min_pixels=kw["min_pixels"], max_pixels=kw["max_pixels"])
                a = np.array(Image.fromarray(a.transpose(1, 2, 0)).resize((rw, rh), resample=3, reducing_gap=None)).transpose(2, 0, 1)
            else:
                rh, rw = H, W
            a = (a.astype(np.float64) * kw["rescale_factor"]).astype(np.float32)
            mean = np.array(kw["image_mean"], dtype=np.float32)
            std = np.array(kw["image_std"], dtype=np.float32)
            a = ((a.T - mean) / std).T
            p = a[None, None]
            if p.shape[1] % T:
                p = np.concatenate([p, np.repeat(p[:, -1:], T - p.shape[1] % T, axis=1)], axis=1)
            gt, gh, gw = p.shape[1] // T, rh // P, rw // P
            p = p.reshape(1, gt, T, 3, gh // M, M, P, gw // M, M, P).transpose(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)
            allp.append(p.reshape(gt * gh * gw, 3 * T * P * P))
            grids.append([gt, gh, gw])
        return {"pixel_values": np.concatenate(allp), "image_grid_thw": np.array(grids, dtype=np.int64)}
