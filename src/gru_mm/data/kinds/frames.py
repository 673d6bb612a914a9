"""`frames`: a folder of images (in name order) or a list of image files -> [T, C, H, W] floats in [0, 1]."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gru_mm.data.kinds.base import FileKind
from gru_mm.data.sources.base import SampleError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def _name_order(path: Path) -> tuple[list[str | int], str]:
    """Numbers in names compare as numbers: frame_2.png before frame_10.png, as a recorder numbered them."""
    parts = re.split(r"(\d+)", path.name)
    return [int(t) if i % 2 else t for i, t in enumerate(parts)], path.name


@dataclass(frozen=True)
class Frames(FileKind):
    """Each image resized to height x width, grey (channels=1) or RGB; step times from `fps` if given."""

    name = "frames"
    default_encoder = "frame_resnet"  # sizes itself to the frames' channels and size
    # 1: EXIF orientation, 16-bit grey, JPEG draft decoding, webp/bmp/gif/tiff, numbers in names in order
    revision = 1

    height: int = 64
    width: int = 64
    channels: int = 3
    fps: float | None = None

    def target(self, value: Any, resolve: Callable[[str], Path]) -> Path | list[Path]:
        """A folder, or the files of a list (a JSON list, or a `;`-joined cell)."""
        items = value if isinstance(value, list) else str(value).split(";")
        paths = [resolve(str(v)) for v in items if str(v).strip()]
        return paths[0] if len(paths) == 1 and paths[0].is_dir() else paths

    def files(self, target: Path | list[Path]) -> list[Path]:
        if isinstance(target, list):
            return target
        if not target.is_dir():
            return [target]
        # hidden files are skipped: macOS leaves "._frame1.png" (not an image) beside each file it copies
        names = [p for p in target.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        images = sorted((p for p in names if not p.name.startswith(".")), key=_name_order)
        if not images:
            raise SampleError("no images", f"folder {target.name} holds no {'/'.join(IMAGE_SUFFIXES)} files")
        return images

    def step_shape(self) -> tuple[int, ...]:
        return (self.channels, self.height, self.width)

    def _image(self, path: Path) -> np.ndarray:
        from PIL import Image, ImageOps, UnidentifiedImageError

        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise SampleError(
                "unsupported file type", f"{path.name} (frames must be {'/'.join(IMAGE_SUFFIXES)})"
            )
        try:
            with Image.open(path) as im:
                if getattr(im, "n_frames", 1) > 1:  # an animated GIF/WebP, a multi-page TIFF
                    raise SampleError(
                        "several images in one file",
                        f"{path.name} holds {im.n_frames} frames; give each frame as its own image file",
                    )
                # a large JPEG decodes at a reduced scale no smaller than the target (a 4000x3000 photo
                # ~5x faster); the square bound holds whichever way EXIF turns it
                side = max(self.width, self.height)
                im.draft(None, (side, side))
                im.load()
                # phone photos store pixels sideways with an EXIF tag saying how to turn them upright
                im = ImageOps.exif_transpose(im)
                size = (self.width, self.height)
                if im.mode.startswith("I"):  # 16-bit grey: convert("L") would clip all above 255 to white
                    grey = np.asarray(im.convert("F").resize(size, Image.Resampling.BILINEAR)) / 65535.0
                    pixels = grey if self.channels == 1 else np.repeat(grey[..., None], 3, axis=2)
                else:
                    im = im.convert("L" if self.channels == 1 else "RGB")
                    pixels = np.asarray(im.resize(size, Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
        except UnidentifiedImageError:
            raise SampleError("unreadable image", f"{path.name} is not an image") from None
        except Image.DecompressionBombError as err:  # not an OSError: it ended the whole run
            raise SampleError("image too large", f"{path.name}: {err}") from None
        except OSError as err:
            problem = "truncated image" if "truncated" in str(err) else "unreadable image"
            raise SampleError(problem, f"{path.name}: {err}") from None
        pixels = np.clip(pixels, 0.0, 1.0).astype(np.float32)
        return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)

    def decode(self, target: Path | list[Path]) -> dict[str, np.ndarray]:
        frames = np.stack([self._image(p) for p in self.files(target)])
        out = {"data": frames}
        if self.fps:
            out["times"] = (np.arange(len(frames)) / self.fps).astype(np.float32)
        return out

    @classmethod
    def encoder_sizes(cls, shape: tuple[int, ...], vocab_size: int | None) -> dict[str, int]:
        # image_size: the larger side, for encoders sized to the frames (frame_resnet)
        return {"in_channels": int(shape[0]), "image_size": int(max(shape[1:]))}
