"""input_pipeline/reencode.py: an image resized once to a short side and encoded again, against
references computed here (an area-weighted mean written with NumPy, Pillow's JPEG at quality 95)."""
import io

import cv2
import numpy as np
import pytest
from PIL import Image

from input_pipeline import reencode
from medssl_jax.errors import UserError


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
  """(n_out, n_in) weights of an area (box) downscale: output pixel j averages the input span
  [j * s, (j + 1) * s), s = n_in / n_out, each input pixel weighted by its overlap with it."""
  s = n_in / n_out
  m = np.zeros((n_out, n_in))
  for j in range(n_out):
    lo, hi = j * s, (j + 1) * s
    for i in range(int(np.floor(lo)), min(n_in, int(np.ceil(hi)))):
      m[j, i] = min(hi, i + 1) - max(lo, i)
  return m / s


def _area_reference(x: np.ndarray, size) -> np.ndarray:
  """The area downscale of (H, W, C) `x` to `size`, rounded, in x's dtype."""
  my, mx = _area_matrix(x.shape[0], size[0]), _area_matrix(x.shape[1], size[1])
  y = np.einsum("ih,hwc,jw->ijc", my, x.astype(np.float64), mx)
  return np.floor(y + 0.5).clip(0, np.iinfo(x.dtype).max).astype(x.dtype)


def _smooth(h, w, c, dtype=np.uint8, seed=0):
  """A smooth image with mild noise (what JPEG is made for), (H, W, C)."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:h, 0:w]
  top = np.iinfo(dtype).max
  chans = [0.5 + 0.4 * np.sin(xx / (5.0 + k) + k) * np.cos(yy / (7.0 + 2 * k)) for k in range(c)]
  x = np.stack(chans, -1) * top + rng.normal(0, 0.01 * top, (h, w, c))
  return x.clip(0, top).astype(dtype)


def _file(x: np.ndarray, fmt: str = "PNG", mode=None, **kw) -> bytes:
  buf = io.BytesIO()
  im = Image.fromarray(x[..., 0] if x.shape[-1] == 1 else x)
  (im.convert(mode) if mode else im).save(buf, format=fmt, **kw)
  return buf.getvalue()


def _pixels(data: bytes):
  """(format, mode, pixels) of encoded bytes, decoded with Pillow (grey -> (H, W, 1))."""
  with Image.open(io.BytesIO(data)) as im:
    x = np.asarray(im)
    return im.format, im.mode, x[..., None] if x.ndim == 2 else x


def test_target_size_keeps_the_aspect_and_never_upscales():
  assert reencode.target_size(40, 60, 20) == (20, 30)
  assert reencode.target_size(60, 40, 20) == (30, 20)
  assert reencode.target_size(30, 30, 20) == (20, 20)
  assert reencode.target_size(31, 47, 20) == (20, 30)  # 47 * 20 / 31 = 30.3
  assert reencode.target_size(2000, 2500, 256) == (256, 320)
  assert reencode.target_size(20, 45, 20) is None and reencode.target_size(19, 45, 20) is None
  assert reencode.target_size(2000, 2500, 0) is None


@pytest.mark.parametrize("hw", [(40, 60), (60, 40), (45, 33)])
@pytest.mark.parametrize("channels", [1, 3])
def test_png_is_the_area_mean_of_the_original(hw, channels):
  x = _smooth(*hw, channels)
  r = reencode.reencode(_file(x), 20, encoding="png")
  size = reencode.target_size(*hw, 20)
  assert r.original_size == hw and r.stored_size == size and r.stored_as == "png"
  fmt, mode, got = _pixels(r.data)
  assert fmt == "PNG" and mode == ("L" if channels == 1 else "RGB") and got.shape == size + (channels,)
  # OpenCV's area filter rounds in fixed point: within one level of the exact weighted mean
  assert np.abs(got.astype(int) - _area_reference(x, size).astype(int)).max() <= 1


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_quality_95_keeps_the_channels(channels):
  x = _smooth(48, 64, channels)
  r = reencode.reencode(_file(x), 24)
  assert r.stored_as == "jpeg" and r.stored_size == (24, 32) and r.original_size == (48, 64)
  fmt, mode, got = _pixels(r.data)
  assert fmt == "JPEG" and mode == ("L" if channels == 1 else "RGB") and got.shape == (24, 32, channels)
  ref = _area_reference(x, (24, 32))
  with Image.open(io.BytesIO(r.data)) as a, Image.open(io.BytesIO(_file(ref, "JPEG", quality=95))) as b:
    assert a.quantization == b.quantization  # the tables of quality 95
  # the pixels of Pillow's quality-95 JPEG (4:2:0) of the reference, within the resize's rounding
  pil = _pixels(_file(ref, "JPEG", quality=95))[2]
  assert np.abs(got.astype(int) - pil.astype(int)).mean() < 0.5
  assert np.abs(got.astype(int) - ref.astype(int)).mean() < (1.0 if channels == 1 else 3.5)


def test_16_bit_stays_16_bit_lossless_even_when_jpeg_is_asked():
  x = _smooth(40, 60, 1, np.uint16)
  r = reencode.reencode(_file(x, mode="I;16"), 20, encoding="jpeg")
  assert r.stored_as == "png" and r.stored_size == (20, 30)
  fmt, mode, got = _pixels(r.data)
  assert fmt == "PNG" and mode == "I;16" and got.dtype == np.uint16
  assert np.abs(got.astype(int) - _area_reference(x, (20, 30)).astype(int)).max() <= 1
  rgb = _smooth(40, 60, 3, np.uint16, seed=1)  # 16-bit colour PNG (Pillow cannot write one: OpenCV, BGR)
  r = reencode.reencode(cv2.imencode(".png", rgb[..., ::-1])[1].tobytes(), 20)
  got = cv2.imdecode(np.frombuffer(r.data, np.uint8), cv2.IMREAD_UNCHANGED)[..., ::-1]
  assert r.stored_as == "png" and got.dtype == np.uint16 and got.shape == (20, 30, 3)
  assert np.abs(got.astype(int) - _area_reference(rgb, (20, 30)).astype(int)).max() <= 1


def test_alpha_is_dropped_and_a_palette_is_expanded_as_the_pipelines_do():
  rgb, grey = _smooth(40, 40, 3), _smooth(40, 40, 1)
  rgba = np.concatenate([rgb, np.full((40, 40, 1), 7, np.uint8)], -1)
  la = np.concatenate([grey, np.full((40, 40, 1), 7, np.uint8)], -1)
  cases = [(_file(rgba), rgb, "RGB"),
           (_file(la[..., 0:1], mode="LA"), grey, "L"),
           (_file(rgb, mode="P"), np.asarray(Image.fromarray(rgb).convert("P").convert("RGB")), "RGB")]
  for data, pixels, mode in cases:
    r = reencode.reencode(data, 20, encoding="png")
    _, got_mode, got = _pixels(r.data)
    assert got_mode == mode
    assert np.abs(got.astype(int) - _area_reference(pixels, (20, 20)).astype(int)).max() <= 1


def test_an_image_at_or_below_the_short_side_is_stored_as_it_is():
  x = _smooth(20, 35, 3)
  for data in (_file(x), _file(x, "JPEG", quality=70)):
    r = reencode.reencode(data, 20)
    assert r.data == data and r.stored_as == "original" and r.original_size == r.stored_size == (20, 35)
    assert reencode.reencode(data, 0).data == data
  r = reencode.reencode(x, 24)  # in memory: lossless PNG, as without a resize
  assert r.stored_as == "png" and r.stored_size == (20, 35)
  np.testing.assert_array_equal(_pixels(r.data)[2], x)
  r = reencode.reencode(_smooth(40, 60, 1), 20, encoding="png")  # in memory, resized
  assert r.stored_size == (20, 30) and _pixels(r.data)[1] == "L"


def test_refusals():
  with pytest.raises(UserError, match="--short_side=-1 must be >= 0"):
    reencode.check_options(-1, "jpeg")
  with pytest.raises(UserError, match="expected one of"):
    reencode.check_options(256, "webp")
  with pytest.raises(UserError, match="give --short_side=N too"):
    reencode.check_options(0, "png")
  reencode.check_options(0, "jpeg")
  with pytest.raises(UserError, match="cannot read image bad.png"):
    reencode.reencode(b"not an image", 20, name="bad.png")
  with pytest.raises(UserError, match="cannot decode image cut.png"):
    reencode.reencode(_file(_smooth(40, 60, 3))[:200], 20, name="cut.png")


def test_disk_cost_is_the_mean_record_size_and_extrapolates():
  files = [_file(_smooth(40 + 4 * i, 60, 3, seed=i)) for i in range(5)] + [_file(_smooth(16, 16, 3))]
  cost = reencode.disk_cost(files, 20, sample=100)
  sizes = [len(reencode.reencode(f, 20).data) for f in files]
  assert cost["images"] == cost["sampled"] == 6 and cost["bytes_per_image"] == pytest.approx(np.mean(sizes))
  assert cost["original_bytes_per_image"] == pytest.approx(np.mean([len(f) for f in files]))
  assert cost["total_bytes"] == pytest.approx(6 * np.mean(sizes))
  assert reencode.disk_cost([lambda f=f: f for f in files], 20, sample=3)["sampled"] == 3
  line = reencode.format_cost({**cost, "bytes_per_image": 25_000.0}, extrapolate=[224_316])
  assert "25.0 kB/image" in line and "224,316 images: 5.61 GB" in line
  grey = reencode.disk_cost(files[:1], 20, grey=True)  # colour converted to 1-channel grey first
  luma = cv2.cvtColor(reencode.decode(files[0]), cv2.COLOR_RGB2GRAY)[..., None]
  assert grey["bytes_per_image"] == len(reencode.reencode(luma, 20).data)
