"""One image re-encoded once at a reduced size: `medssl-jax prepare-data --short_side=N`.

An image whose shorter side is above N is decoded, resized so that its shorter side is N (aspect
kept, the longer side rounded to the nearest pixel) with OpenCV's area filter (`INTER_AREA`: each
output pixel is the mean of the input pixels it covers, so nothing aliases) and encoded again:
JPEG (quality 95, optimised Huffman tables, 4:2:0 chroma) for an 8-bit image, or lossless PNG
when asked (`encoding='png'`) and always for a 16-bit image, which stays 16-bit. The channels are
the ones every host pipeline decodes from the original: grey (L, 1, LA, F) stays 1-channel grey,
16-bit grey (I;16, I) stays 16-bit grey, a 16-bit RGB(A) PNG stays 16-bit RGB, anything else
(RGB, RGBA, palette, CMYK) becomes 8-bit RGB; alpha is dropped, as the pipelines drop it.

An image whose shorter side is already <= N is never upscaled: an image file keeps its own bytes
(`stored_as='original'`), an in-memory image is the lossless PNG it is without a resize.

`disk_cost` estimates the size of a prepared split from a sample of its images; `main` measures
the bytes per image of a folder of image files and extrapolates them to data sets of other sizes:
  python -c 'import sys; from input_pipeline import reencode; reencode.main(sys.argv[1:])' \
      FOLDER --short_side=256,320 [--grey] [--extrapolate=224316,454295]
"""
import argparse
import dataclasses
import io
import os

import cv2
import numpy as np
from PIL import Image

from medssl_jax.errors import UserError

ENCODINGS = ("jpeg", "png")
JPEG_QUALITY = 95
PNG_COMPRESSION = 6  # zlib level: a one-off cost at prepare time; decoding speed does not depend on it
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclasses.dataclass(frozen=True)
class Reencoded:
  """A record's bytes, the original (height, width), the stored (height, width), and what the bytes
  are: 'jpeg' or 'png' (re-encoded here) or 'original' (the file's own bytes, not resized)."""
  data: bytes
  original_size: tuple
  stored_size: tuple
  stored_as: str


def check_options(short_side: int, encoding: str, quality: int = JPEG_QUALITY) -> None:
  if short_side < 0:
    raise UserError(f"--short_side={short_side} must be >= 0 (0 keeps each image file's own bytes)")
  if encoding not in ENCODINGS:
    raise UserError(f"--encoding={encoding!r}: expected one of {list(ENCODINGS)}")
  if short_side == 0 and encoding != "jpeg":
    raise UserError(f"--encoding={encoding} re-encodes resized images only: give --short_side=N too "
                    f"(--short_side=0 keeps each file's own bytes)")
  if not 1 <= quality <= 100:
    raise UserError(f"JPEG quality {quality} must be in [1, 100]")


def target_size(height: int, width: int, short_side: int):
  """(height, width) with the shorter side `short_side` and the aspect kept; None when the
  shorter side is already <= short_side (never upscaled) or short_side is 0."""
  short = min(height, width)
  if short_side <= 0 or short <= short_side:
    return None
  long = max(short_side, int(np.floor(max(height, width) * short_side / short + 0.5)))
  return (short_side, long) if height <= width else (long, short_side)


def image_size(data: bytes, name: str = "") -> tuple:
  """(height, width) from an encoded image's header (nothing decoded)."""
  try:
    with Image.open(io.BytesIO(data)) as im:
      return im.height, im.width
  except Exception as e:  # Pillow raises many types for a bad file
    raise UserError(f"cannot read image {name} ({type(e).__name__}: {e}); replace or remove it") from e


def _png_depth_and_colour(data: bytes):
  """(bit depth, colour type) from a PNG's IHDR (the first chunk, by the PNG specification)."""
  if data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
    return None
  return data[24], data[25]


def decode(data: bytes, name: str = "") -> np.ndarray:
  """(H, W, 1 or 3) uint8, or uint16 for a 16-bit image, of an encoded image (see the module
  docstring for the channels)."""
  try:
    png = _png_depth_and_colour(data)
    if png is not None and png[0] == 16:  # Pillow reads 16-bit colour PNGs as 8-bit: OpenCV keeps 16
      x = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
      if x is None:
        raise ValueError("OpenCV cannot decode it")
      if png[1] in (0, 4):  # grey, grey + alpha
        x = x if x.ndim == 2 else x[..., 0]
      else:
        x = np.ascontiguousarray(x[..., 2::-1])  # BGR(A) -> RGB
    else:
      with Image.open(io.BytesIO(data)) as im:
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
          x = np.asarray(im).astype(np.int64).clip(0, 65535).astype(np.uint16)
        elif im.mode in ("L", "1", "LA", "F"):
          x = np.asarray(im.convert("L"))
        else:
          x = np.asarray(im.convert("RGB"))
  except Exception as e:  # Pillow raises many types for a bad file
    raise UserError(f"cannot decode image {name} ({type(e).__name__}: {e}); replace or remove it") from e
  return x[..., None] if x.ndim == 2 else x


def resize(image: np.ndarray, size: tuple) -> np.ndarray:
  """(H, W, C) uint8 / uint16 resized to `size` (height, width) with OpenCV's area filter."""
  h, w = size
  y = cv2.resize(np.ascontiguousarray(image), (w, h), interpolation=cv2.INTER_AREA)
  return y.reshape(h, w, image.shape[-1])


def encode(image: np.ndarray, encoding: str = "jpeg", quality: int = JPEG_QUALITY) -> tuple:
  """(bytes, 'jpeg' or 'png') of an (H, W, 1 or 3) uint8 / uint16 image: JPEG for 8-bit when
  `encoding='jpeg'`, else lossless PNG (16-bit stays 16-bit)."""
  x = image[..., 0] if image.shape[-1] == 1 else image[..., ::-1]  # OpenCV writes BGR
  x = np.ascontiguousarray(x)
  if encoding == "jpeg" and image.dtype == np.uint8:
    ok, buf = cv2.imencode(".jpg", x, [cv2.IMWRITE_JPEG_QUALITY, int(quality), cv2.IMWRITE_JPEG_OPTIMIZE, 1])
    kind = "jpeg"
  else:
    ok, buf = cv2.imencode(".png", x, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    kind = "png"
  if not ok:
    raise RuntimeError(f"OpenCV could not encode a {image.dtype} {image.shape} image as {kind}")
  return buf.tobytes(), kind


def reencode(item, short_side: int, encoding: str = "jpeg", quality: int = JPEG_QUALITY, name: str = "",
             lossless=None) -> Reencoded:
  """The record of one image: `item` is an image file's bytes or an in-memory (H, W, C) uint8 image.
  `lossless(image) -> bytes` encodes an in-memory image that is not resized (default: PNG)."""
  if isinstance(item, (bytes, bytearray, memoryview)):
    data = bytes(item)
    size = image_size(data, name)
    target = target_size(*size, short_side)
    if target is None:
      return Reencoded(data, size, size, "original")
    pixels = decode(data, name)
    if pixels.shape[:2] != size:
      raise UserError(f"image {name}: its header says {size[0]}x{size[1]} pixels, its pixels are "
                      f"{pixels.shape[0]}x{pixels.shape[1]}; replace it")
  else:
    pixels = np.asarray(item)
    size = tuple(int(s) for s in pixels.shape[:2])
    target = target_size(*size, short_side)
    if target is None:
      data, kind = (lossless(pixels), "png") if lossless is not None else encode(pixels, "png")
      return Reencoded(data, size, size, kind)
  data, kind = encode(resize(pixels, target), encoding, quality)
  return Reencoded(data, size, target, kind)


def disk_cost(items, short_side: int, encoding: str = "jpeg", quality: int = JPEG_QUALITY, sample: int = 64,
              seed: int = 0, grey: bool = False) -> dict:
  """Bytes per image of `items` (a sequence of image file bytes or in-memory images, or of
  callables returning them) as prepared at `short_side` (0: as they are), from a seeded sample of
  `sample` of them (all when fewer). `grey=True` first converts colour images to grey (ITU-R 601
  luma, as Pillow's convert('L')): what a grey-stored copy of grey images kept as RGB would cost.
  Returns {images, sampled, bytes_per_image, total_bytes, original_bytes_per_image}."""
  n = len(items)
  pick = np.sort(np.random.default_rng(seed).permutation(n)[:max(1, min(sample, n))]) if n else np.zeros(0, int)
  if grey and short_side == 0:
    raise ValueError("grey=True measures re-encoded images: give short_side > 0")
  sizes, originals = [], []
  for i in pick:
    item = items[int(i)]
    item = item() if callable(item) else item
    raw = isinstance(item, (bytes, bytearray, memoryview))
    originals.append(len(item) if raw else np.asarray(item).nbytes)
    if grey and not (raw and target_size(*image_size(bytes(item)), short_side) is None):
      x = decode(bytes(item)) if raw else np.asarray(item)
      if x.shape[-1] == 3:
        x = cv2.cvtColor(np.ascontiguousarray(x), cv2.COLOR_RGB2GRAY)[..., None]
      item = x
    sizes.append(len(reencode(item, short_side, encoding, quality).data))
  per = float(np.mean(sizes)) if sizes else 0.0
  return {"images": n, "sampled": len(sizes), "bytes_per_image": per, "total_bytes": per * n,
          "original_bytes_per_image": float(np.mean(originals)) if originals else 0.0}


def format_cost(cost: dict, extrapolate=()) -> str:
  """One line: measured bytes per image and the total, plus the total for each image count given."""
  line = (f"{cost['bytes_per_image'] / 1e3:.1f} kB/image (from {cost['sampled']} of {cost['images']} images; "
          f"originals {cost['original_bytes_per_image'] / 1e3:.1f} kB) -> {cost['total_bytes'] / 1e9:.3f} GB")
  for n in extrapolate:
    line += f"; {int(n):,} images: {cost['bytes_per_image'] * int(n) / 1e9:.2f} GB"
  return line


def _files(folder: str) -> list:
  exts = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
  return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(exts))


def _read(path: str) -> bytes:
  with open(path, "rb") as f:
    return f.read()


def main(argv=None) -> None:
  p = argparse.ArgumentParser(prog="reencode.main",
                              description="Bytes per image of a folder of image files prepared at a short side.")
  p.add_argument("folder")
  p.add_argument("--short_side", default="256", help="comma-separated short sides (0: the files as they are)")
  p.add_argument("--encoding", default="jpeg", choices=ENCODINGS)
  p.add_argument("--quality", type=int, default=JPEG_QUALITY)
  p.add_argument("--grey", action="store_true", help="convert colour images to 1-channel grey first")
  p.add_argument("--sample", type=int, default=1 << 30, help="images measured (seeded sample; default all)")
  p.add_argument("--extrapolate", default="", help="comma-separated image counts to extrapolate to")
  a = p.parse_args(argv)
  paths = _files(a.folder)
  items = [lambda path=path: _read(path) for path in paths]
  counts = [int(n) for n in a.extrapolate.split(",") if n.strip()]
  for side in (int(s) for s in a.short_side.split(",")):
    cost = disk_cost(items, side, "jpeg" if side == 0 else a.encoding, a.quality, a.sample, grey=a.grey and side > 0)
    what = "as stored" if side == 0 else f"short side {side}, {a.encoding}" + (
        f" q{a.quality}" if a.encoding == "jpeg" else "")
    print(f"{what}{', grey' if a.grey and side else ''}: {format_cost(cost, counts)}")

