"""Handlers of the image preprocessing layers: the Random* augmentations
(identity at inference), CenterCrop and Resizing."""
from __future__ import annotations

import numpy as np

from . import movement
from .layers_merge import _copy
from .registry import layer

# Keras 3 runs these only with training=True; at inference they return the
# input unchanged (keras/src/layers/preprocessing/image_preprocessing).
AUGMENTATIONS = ("RandomFlip", "RandomRotation", "RandomZoom", "RandomContrast",
                 "RandomTranslation", "RandomBrightness", "RandomHue", "RandomSaturation",
                 "RandomSharpness", "RandomShear", "RandomGrayscale", "RandomColorJitter",
                 "RandomColorDegeneration", "RandomPosterization", "RandomInvert",
                 "RandomErasing", "RandomGaussianBlur", "RandomPerspective",
                 "RandomElasticTransform", "Solarization", "AutoContrast",
                 "RandAugment", "AugMix", "CutMix", "MixUp")


@layer(*AUGMENTATIONS)
def augmentation(ctx):
    ctx.config.accept(*ctx.config)  # every argument shapes training only
    ctx.info(ctx.in_shape)
    return ctx.add("identity", ctx.inputs, ctx.in_shape)


def check_random_crop(entry) -> list:
    from .precheck import input_shapes
    c = entry.get("config") or {}
    shapes = input_shapes(entry)
    if shapes and len(shapes[0]) == 3 and (c.get("height"), c.get("width")) != shapes[0][:2]:
        return [f"RandomCrop({c.get('height')}, {c.get('width')}) of a {shapes[0][0]}x"
                f"{shapes[0][1]} input: at inference Keras returns the input uncropped while "
                f"declaring the cropped shape; use CenterCrop for a deterministic crop"]
    return []


@layer("RandomCrop", check=check_random_crop)
def random_crop(ctx):
    """Keras 3 returns the input uncropped at inference even where it
    declares the cropped shape; only a crop to the input's own size is
    unambiguous."""
    ctx.channels_last()
    h, w = ctx.in_shape[:2]
    if (ctx.config["height"], ctx.config["width"]) != (h, w):
        ctx.unsupported(f"RandomCrop({ctx.config['height']}, {ctx.config['width']}) of a "
                        f"{h}x{w} input: at inference Keras returns the input uncropped "
                        f"while declaring a {ctx.config['height']}x{ctx.config['width']} "
                        f"output, so there is no one answer to export; use CenterCrop for "
                        f"a deterministic crop")
    return augmentation(ctx)


def crop_box(ctx, top, left, height, width) -> str:
    h, w, ch = ctx.in_shape
    out = (height, width, ch)
    return _copy(ctx, out, [movement.pad_or_crop(ctx.in_shape, out, [top, left, 0], [0, 0, 0])])


@layer("CenterCrop")
def center_crop(ctx):
    ctx.channels_last()
    h, w, _ = ctx.in_shape
    th, tw = int(ctx.config["height"]), int(ctx.config["width"])
    if th > h or tw > w:
        ctx.unsupported(f"CenterCrop to {th}x{tw} of a smaller {h}x{w} input resizes "
                        f"(Keras's smart_resize); crop to at most the input size")
    return crop_box(ctx, (h - th) // 2, (w - tw) // 2, th, tw)


def nearest_map(n_in: int, n_out: int) -> dict:
    """TensorFlow's nearest resize with half-pixel centres:
    src = min(floor((i + 0.5) * in / out), in - 1), the scale in float32."""
    scale = np.float32(n_in) / np.float32(n_out)
    src = np.floor((np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale)
    i0 = np.minimum(src.astype(np.int64), n_in - 1)
    return {"index": np.stack([i0, i0], axis=1).reshape(-1).astype(np.int16),
            "frac": np.zeros(n_out, np.float32)}


@layer("Resizing")
def resizing(ctx):
    c = ctx.config
    ctx.channels_last()
    if len(ctx.in_shape) != 3:
        ctx.unsupported(f"Resizing of a {len(ctx.in_shape) + 1}-D input; images (H, W, C)")
    interpolation = c["interpolation"]
    if interpolation not in ("bilinear", "nearest"):
        ctx.unsupported(f"interpolation='{interpolation}'; bilinear and nearest are supported")
    if c["antialias"]:
        ctx.unsupported("antialias=True; resize without antialiasing")
    if c["fill_mode"] != "constant":
        ctx.unsupported(f"fill_mode='{c['fill_mode']}'")
    h, w, ch = ctx.in_shape
    th, tw = int(c["height"]), int(c["width"])
    src = ctx.inputs[0]
    if c["crop_to_aspect_ratio"]:
        crop_h = max(min(h, int(np.float32(w * th) / np.float32(tw))), 1)
        crop_w = max(min(w, int(np.float32(h * tw) / np.float32(th))), 1)
        if (crop_h, crop_w) != (h, w):
            top, left = int((h - crop_h) / 2), int((w - crop_w) / 2)
            out = (crop_h, crop_w, ch)
            src = ctx.add("copy", [src], out, {
                "moves": [movement.pad_or_crop(ctx.in_shape, out, [top, left, 0], [0, 0, 0])],
                "fill": False, "out_size": int(np.prod(out))}, suffix="_crop")
            h, w = crop_h, crop_w
    elif c["pad_to_aspect_ratio"]:
        if float(c["fill_value"]) != 0.0:
            ctx.unsupported(f"pad_to_aspect_ratio with fill_value={c['fill_value']}; "
                            f"zero padding is supported")
        pad_h = max(h, int(np.float32(w * th) / np.float32(tw)))
        pad_w = max(w, int(np.float32(h * tw) / np.float32(th)))
        top, left = int((pad_h - h) / 2), int((pad_w - w) / 2)
        if top or left:  # Keras pads `top` (and `left`) on both sides
            out = (h + 2 * top, w + 2 * left, ch)
            src = ctx.add("copy", [src], out, {
                "moves": [movement.pad_or_crop((h, w, ch), out, [0, 0, 0], [top, left, 0])],
                "fill": True, "out_size": int(np.prod(out))}, suffix="_pad")
            h, w = out[:2]
    else:
        c.accept("fill_value")
    out = (th, tw, ch)
    ctx.info(out, macs=th * tw * ch * 4)
    maps = movement.bilinear_map if interpolation == "bilinear" else nearest_map
    return ctx.add("resize_bilinear", [src], out, {"y": maps(h, th), "x": maps(w, tw)})
