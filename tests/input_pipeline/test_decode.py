"""numpy_pipeline._decode: OpenCV decodes the common JPEG and PNG files to exactly the pixels of the
Pillow decoder it replaced (kept here as the reference), and everything else still goes to Pillow."""
import io
import zlib

import numpy as np
import pytest
from PIL import Image

from input_pipeline import numpy_pipeline
from medssl_jax.errors import UserError


def pillow_reference(f) -> np.ndarray:
  """The decoder before issue 27, verbatim: Pillow for every file."""
  with Image.open(f) as im:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
      x = np.round(np.asarray(im, np.float64) / 257.0).clip(0, 255).astype(np.uint8)
    elif im.mode in ("L", "1", "LA", "F"):
      x = np.asarray(im.convert("L"))
    else:
      x = np.asarray(im.convert("RGB"))
  return x[..., None] if x.ndim == 2 else x


def _pixels(h, w, c, seed=0):
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:h, 0:w]
  smooth = 128 + 100 * np.sin(yy / 5.0)[..., None] * np.cos(xx[..., None] / 7.0 + np.arange(c))  # JPEG-friendly
  return np.clip(smooth + rng.normal(0, 20, (h, w, c)), 0, 255).astype(np.uint8)


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
  buf = io.BytesIO()
  im.save(buf, format=fmt, **kw)
  return buf.getvalue()


def _files():
  """name -> (encoded bytes, whether OpenCV decodes it)."""
  grey, rgb, rgba = _pixels(37, 53, 1)[..., 0], _pixels(37, 53, 3), _pixels(37, 53, 4)
  g16 = (np.random.default_rng(1).integers(0, 65536, (29, 41))).astype(np.uint16)
  exif = Image.Exif()
  exif[0x0112] = 6  # orientation: rotate 90 (neither decoder applies it)
  palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=40)
  transparent = palette.copy()
  transparent.info["transparency"] = 3
  grey_trns = Image.fromarray(grey)
  return {
      "jpeg-grey": (_save(Image.fromarray(grey), "JPEG", quality=90), True),
      "jpeg-rgb": (_save(Image.fromarray(rgb), "JPEG", quality=95), True),
      "jpeg-rgb-444-progressive": (_save(Image.fromarray(rgb), "JPEG", quality=80, subsampling=0, progressive=True),
                                   True),
      "jpeg-rgb-exif-rotated": (_save(Image.fromarray(rgb), "JPEG", exif=exif.tobytes()), True),
      "jpeg-cmyk": (_save(Image.fromarray(rgba, "CMYK"), "JPEG"), False),
      "png-grey": (_save(Image.fromarray(grey), "PNG"), True),
      "png-grey-interlaced": (_save(Image.fromarray(grey), "PNG", optimize=False), True),
      "png-rgb": (_save(Image.fromarray(rgb), "PNG"), True),
      "png-rgba": (_save(Image.fromarray(rgba), "PNG"), True),
      "png-palette": (_save(palette, "PNG"), True),
      "png-palette-transparent": (_save(transparent, "PNG"), True),
      "png-grey-transparent-colour": (_save(grey_trns, "PNG", transparency=7), True),
      "png-16bit-grey": (_save(Image.fromarray(g16), "PNG"), True),
      "png-grey-alpha": (_save(Image.fromarray(rgba[..., :2].copy(), "LA"), "PNG"), False),
      "png-1bit": (_save(Image.fromarray(grey > 128), "PNG"), False),
      "tiff-16bit-grey": (_save(Image.fromarray(g16), "TIFF"), False),
      "bmp-rgb": (_save(Image.fromarray(rgb), "BMP"), False),
  }


FILES = _files()


@pytest.mark.parametrize("name", sorted(FILES))
def test_decodes_the_pixels_of_the_pillow_decoder(name, tmp_path):
  data, by_opencv = FILES[name]
  want = pillow_reference(io.BytesIO(data))
  path = tmp_path / name
  path.write_bytes(data)
  for got in (numpy_pipeline._decode(str(path)), numpy_pipeline._decode(io.BytesIO(data), "record 0")):
    assert got.dtype == np.uint8 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
  # Which decoder ran: the fast path takes exactly the files it is known to decode alike.
  assert (numpy_pipeline._decode_opencv(data) is not None) == by_opencv


def test_16_bit_greys_scale_as_x_over_257_rounded():
  levels = np.arange(65536, dtype=np.uint16)
  np.testing.assert_array_equal(numpy_pipeline._16_TO_8[levels],
                                np.round(levels / 257.0).clip(0, 255).astype(np.uint8))
  ramp = levels.reshape(256, 256)
  got = numpy_pipeline._decode(io.BytesIO(_save(Image.fromarray(ramp), "PNG")))
  np.testing.assert_array_equal(got[..., 0], np.round(ramp / 257.0).astype(np.uint8))


def test_16_bit_colour_goes_to_pillow():
  # Pillow keeps the high byte of a 16-bit RGB PNG (not x / 257): OpenCV's uint16 result is refused.
  rgb16 = np.random.default_rng(2).integers(0, 65536, (9, 11, 3)).astype(">u2")
  raw = rgb16.tobytes()
  rows = b"".join(b"\x00" + raw[r * 11 * 6:(r + 1) * 11 * 6] for r in range(9))

  def chunk(kind, body):
    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

  header = (11).to_bytes(4, "big") + (9).to_bytes(4, "big") + bytes([16, 2, 0, 0, 0])  # 11 x 9, 16-bit RGB
  png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
  assert numpy_pipeline._decode_opencv(png) is None
  np.testing.assert_array_equal(numpy_pipeline._decode(io.BytesIO(png)), pillow_reference(io.BytesIO(png)))


@pytest.mark.parametrize("name", ["jpeg-rgb", "jpeg-grey", "png-rgb", "png-16bit-grey"])
def test_truncated_and_corrupt_files_fare_as_with_pillow(name, tmp_path):
  """A cut file is a UserError naming it wherever Pillow refused it; where Pillow still read every pixel
  (a PNG cut inside its end chunk, which OpenCV refuses), the same pixels."""
  data = FILES[name][0]
  refused = 0
  for bad in (data[:len(data) // 2], data[:-3], data[:-20], b"not an image"):
    path = tmp_path / "bad"
    path.write_bytes(bad)
    try:
      want = pillow_reference(io.BytesIO(bad))
    except Exception:  # noqa: BLE001 - Pillow's many error types
      refused += 1
      with pytest.raises(UserError, match="cannot decode image .*bad"):
        numpy_pipeline._decode(str(path))
    else:
      np.testing.assert_array_equal(numpy_pipeline._decode(str(path)), want)
  assert refused >= 2
  with pytest.raises(UserError, match="cannot decode image .*absent"):
    numpy_pipeline._decode(str(tmp_path / "absent.png"))
