"""DICOM files as the images the host pipelines read: uint8 grey (or RGB) arrays and lossless PNG bytes.

The pipelines decode JPEG and PNG (Pillow / OpenCV / tf.image) and cannot read DICOM, so a DICOM
file reaches them as the lossless PNG of its display image (`png_bytes`), made when the image is
read. `to_uint8` turns the stored pixels into that display image, as a DICOM viewer does
(PS3.3 C.11, pydicom >= 3 `pydicom.pixels`):

1. the stored values, as float, through the Modality LUT (`apply_modality_lut`: the Modality LUT
   Sequence, else RescaleSlope x value + RescaleIntercept, e.g. Hounsfield units for CT);
2. through the VOI transform (`apply_voi_lut`: the VOI LUT Sequence when there is one, else the
   first WindowCenter / WindowWidth with its VOILUTFunction), whose output range (pydicom's: the
   window's [y_min, y_max], the LUT's smallest to largest entry) is mapped linearly to 0..255;
   an image with neither is mapped from its own smallest to largest value;
3. MONOCHROME1 (0 = white) inverted, so that bone is bright as in MONOCHROME2;
4. rounded to uint8 (H, W, 1). 8 bits, not 16: every pipeline reduces images to 8 bits anyway
   (a 16-bit PNG is read as x / 257), and the window has already spent the stored range on the
   contrast that matters.
Colour images (RGB, YBR_* which pydicom converts to RGB, PALETTE COLOR through its palette) are
kept as RGB (H, W, 3), scaled from their bit depth to 8 bits. Multi-frame files (a volume, a
cine loop) are refused: one file is one image here.
"""
import io
import warnings

import numpy as np

from medssl_jax.errors import UserError

PREAMBLE_OFFSET, MAGIC = 128, b"DICM"  # PS3.10 7.1: a 128-byte preamble, then 'DICM'


def has_dicom_magic(path: str) -> bool:
  """True when the file holds the DICOM preamble ('DICM' at byte 128)."""
  try:
    with open(path, "rb") as f:
      f.seek(PREAMBLE_OFFSET)
      return f.read(len(MAGIC)) == MAGIC
  except OSError:
    return False


def read(path: str, pixels: bool = True):
  """The dataset of a DICOM file (`force`: files written without the preamble are read too)."""
  import pydicom  # (a core dependency, imported where used: ~0.7 s that runs without DICOM files need not wait)
  return pydicom.dcmread(path, force=True, stop_before_pixels=not pixels)


def patient_id(path: str) -> str:
  """The PatientID tag (0010,0020) of a DICOM file; '' when it is absent or empty."""
  return str(read(path, pixels=False).get("PatientID", "") or "").strip()


def _voi_range(ds, x: np.ndarray):
  """(output, lo, hi): the VOI transform of `x` and the range of its output that maps to 0..255."""
  from pydicom import pixels as dicom_pixels  # (where used, as in `read`)
  lut = ds.get("VOILUTSequence")
  lut = lut[0] if lut else None
  if lut is not None and lut.get("LUTDescriptor") is not None and lut.get("LUTData") is not None:
    count, first = int(lut.LUTDescriptor[0]) or 2 ** 16, int(lut.LUTDescriptor[1])
    with warnings.catch_warnings():  # the LUT is indexed by integer values, as PS3.3 C.11.2.1.1 says
      warnings.simplefilter("ignore")
      out = dicom_pixels.apply_voi_lut(np.rint(x).astype(np.int64), ds)
      entries = dicom_pixels.apply_voi_lut(np.arange(first, first + count, dtype=np.int64), ds)
    return out.astype(np.float64), float(entries.min()), float(entries.max())
  if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
    out = dicom_pixels.apply_voi_lut(x, ds)
    with np.errstate(over="ignore"):  # values far outside any window: the output's two ends
      lo, hi = dicom_pixels.apply_voi_lut(np.array([-1e300, 1e300]), ds)
    return out, float(lo), float(hi)
  return x, float(x.min()), float(x.max())


def _scale(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
  if not hi > lo:  # a flat image (or window)
    return np.zeros(x.shape, np.uint8)
  return np.rint(np.clip((x - lo) / (hi - lo), 0.0, 1.0) * 255.0).astype(np.uint8)


def to_uint8(ds, name: str = "") -> np.ndarray:
  """uint8 (H, W, 1) grey or (H, W, 3) RGB display image of a dataset (the module docstring)."""
  from pydicom import pixels as dicom_pixels  # (where used, as in `read`)
  name = name or str(getattr(ds, "filename", "") or "DICOM dataset")
  if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
    raise UserError(f"DICOM file {name} has no pixel data (a report, a presentation state or a DICOMDIR?); "
                    f"remove it from data.path")
  frames = int(ds.get("NumberOfFrames", 1) or 1)
  if frames > 1:
    raise UserError(f"DICOM file {name} holds {frames} frames; one file is one image here: export the frames "
                    f"you want as single-frame files (or PNGs) and remove it from data.path")
  photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
  stored = ds.pixel_array  # decoded (compressed transfer syntaxes need their pydicom plug-in)
  if photometric == "PALETTE COLOR":
    rgb = dicom_pixels.apply_color_lut(stored, ds)
    return _scale(rgb.astype(np.float64), 0.0, float(np.iinfo(rgb.dtype).max if rgb.dtype.kind in "ui" else 1.0))
  if stored.ndim == 3:  # RGB (YBR_* already converted to RGB by pydicom)
    bits = int(ds.get("BitsStored", 8) or 8)
    return stored.astype(np.uint8) if bits <= 8 else _scale(stored.astype(np.float64), 0.0, 2.0 ** bits - 1)
  x = np.asarray(dicom_pixels.apply_modality_lut(stored, ds), np.float64)
  out, lo, hi = _voi_range(ds, x)
  grey = _scale(out, lo, hi)
  if photometric == "MONOCHROME1":
    grey = 255 - grey
  return grey[..., None]


def read_uint8(path: str) -> np.ndarray:
  """`to_uint8` of the file at `path`; UserError naming the file when it cannot be read."""
  try:
    return to_uint8(read(path), name=path)
  except UserError:
    raise
  except Exception as e:  # pydicom and its decoders raise many types for a bad or unsupported file
    raise UserError(f"cannot read DICOM file {path} ({type(e).__name__}: {e}); replace or remove it (a compressed "
                    f"file needs pydicom's decoder plug-in, e.g. pip install pylibjpeg pylibjpeg-libjpeg "
                    f"pylibjpeg-openjpeg)") from e


def png_bytes(image: np.ndarray) -> bytes:
  """Lossless PNG of a uint8 (H, W, 1 or 3) image (zlib level 1: made on every read, so made fast)."""
  from PIL import Image
  x = np.asarray(image)
  buf = io.BytesIO()
  Image.fromarray(x[..., 0] if x.shape[-1] == 1 else x).save(buf, format="PNG", compress_level=1)
  return buf.getvalue()
