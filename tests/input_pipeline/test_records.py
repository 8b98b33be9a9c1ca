"""data.source='records' (medssl-jax prepare-data): the same images, labels, cases and batches as
the source the shards were written from, in every host pipeline."""
import io
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from configs.base import get_base_config
from input_pipeline import numpy_pipeline, sources
from input_pipeline.sources import records
from medssl_jax.commands import prepare_data
from medssl_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytest.importorskip("array_record")


def _file_source(folder):
  """Six image files of mixed formats: colour PNG, grey PNG, 16-bit grey PNG, RGBA PNG, JPEG."""
  rng = np.random.default_rng(0)
  paths = []
  for i in range(6):
    h, w = 20 + 3 * i, 24 + 2 * i
    kind = i % 5
    if kind == 0:
      im, ext = Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)), "png"
    elif kind == 1:
      im, ext = Image.fromarray(rng.integers(0, 256, (h, w), np.uint8)), "png"
    elif kind == 2:
      im, ext = Image.fromarray(rng.integers(0, 65536, (h, w), np.uint16)).convert("I;16"), "png"
    elif kind == 3:
      im, ext = Image.fromarray(rng.integers(0, 256, (h, w, 4), np.uint8)), "png"
    else:
      im, ext = Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)), "jpg"
    path = os.path.join(folder, f"x{i}.{ext}")
    im.save(path)
    paths.append(path)
  return sources.Source("files", labels=np.array([0, 1, 0, 1, 1, 0]), case_ids=["a", "a", "b", "c", "c", "c"],
                        image_ids=[f"img{i}" for i in range(6)], num_classes=2, paths=paths,
                        class_names=("no", "yes"))


def _records_cfg(path, image_size=12):
  c = get_base_config()
  c.data.source, c.data.path, c.data.image_size, c.data.channels = "records", str(path), image_size, 3
  return c


def _batches(module, src, c, n=3, pairing="case"):
  it = module.pretrain_iterator(src, data_cfg=c.data, aug_cfg=c.aug, pairing=pairing, global_batch=2, seed=4)
  out = [next(it) for _ in range(n)]
  it.close()
  return out


def _assert_same_batches(a, b):
  for x, y in zip(a, b):
    assert set(x) == set(y)
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_file_source_round_trips_bit_for_bit(tmp_path):
  (tmp_path / "files").mkdir()
  src = _file_source(str(tmp_path / "files"))
  r = records.write_split(src, str(tmp_path / "prepared" / "train"), images_per_shard=4)
  assert r == {"images": 6, "shards": 2, "folder": str(tmp_path / "prepared" / "train")}
  c = _records_cfg(tmp_path / "prepared")
  got = sources.load_source(c.data, "train")
  assert got.paths is None and got.images is None and len(got) == 6
  for field in ("labels", "case_ids", "image_ids"):
    np.testing.assert_array_equal(getattr(got, field), getattr(src, field))
  assert got.class_names == ("no", "yes") and got.num_classes == 2
  for i in range(6):  # every record decodes to the file's pixels (16-bit, alpha and JPEG included)
    np.testing.assert_array_equal(numpy_pipeline._loader(got)(i), numpy_pipeline._loader(src)(i))
  _assert_same_batches(_batches(numpy_pipeline, got, c), _batches(numpy_pipeline, src, c))
  from input_pipeline import grain_pipeline  # workers open their own shard readers
  c.data.host_workers = 2
  _assert_same_batches(_batches(grain_pipeline, got, c), _batches(numpy_pipeline, src, c))
  tf_pipeline = pytest.importorskip("input_pipeline.pipeline")
  _assert_same_batches(_batches(tf_pipeline, got, c), _batches(tf_pipeline, src, c))


def test_in_memory_source_and_the_command(tmp_path):
  out = tmp_path / "prepared"
  c = get_base_config()
  c.data.image_size = 16
  cmd = [sys.executable, "-m", "medssl_jax", "prepare-data", "--config=configs/demo.py", f"--out={out}",
         "--splits=train,test", "--images_per_shard=500"]
  p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert p.returncode == 0, p.stderr[-2000:]
  assert "train: " in p.stdout and " shard(s) -> " in p.stdout
  # A second write into the same folder is refused in one line, and nothing is overwritten.
  mtime = os.path.getmtime(out / "train" / records.INDEX)
  again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert again.returncode == 2 and again.stderr.strip().splitlines()[-1].startswith("error: ")
  assert "already holds a prepared split" in again.stderr
  assert os.path.getmtime(out / "train" / records.INDEX) == mtime
  from configs import demo
  original = demo.get_config()
  prepared = demo.get_config()
  with prepared.unlocked():
    prepared.data.source, prepared.data.path = "records", str(out)
  for split in ("train", "test"):
    a, b = sources.load_source(original.data, split), sources.load_source(prepared.data, split)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.case_ids, b.case_ids)
    np.testing.assert_array_equal(numpy_pipeline._loader(b)(7), a.images[7])
  a, b = sources.load_source(original.data, "train"), sources.load_source(prepared.data, "train")
  _assert_same_batches(_batches(numpy_pipeline, b, prepared, pairing="views"),
                       _batches(numpy_pipeline, a, original, pairing="views"))


def test_refusals(tmp_path):
  (tmp_path / "files").mkdir()
  src = _file_source(str(tmp_path / "files"))
  folder = tmp_path / "prepared" / "train"
  records.write_split(src, str(folder), images_per_shard=4)
  with pytest.raises(UserError, match="already holds a prepared split"):
    records.write_split(src, str(folder))
  c = _records_cfg(tmp_path / "prepared")
  with pytest.raises(UserError, match="not 'test'"):
    sources.load_source(c.data, "test")
  os.remove(folder / "images-00001-of-00002.array_record")
  with pytest.raises(UserError, match="shard images-00001-of-00002.array_record is missing"):
    sources.load_source(c.data, "train")
  with pytest.raises(UserError, match="holds no prepared split"):
    sources.load_source(_records_cfg(tmp_path / "files").data, "train")
  with pytest.raises(UserError, match="read from a local or mounted folder"):
    sources.load_source(_records_cfg("gs://bucket/prepared").data, "train")
  # A patient in two prepared splits is leakage, as with every source.
  records.write_split(src, str(tmp_path / "prepared2" / "train"))
  records.write_split(src, str(tmp_path / "prepared2" / "test"))
  with pytest.raises(UserError, match="patient leakage"):
    sources.load_source(_records_cfg(tmp_path / "prepared2").data, "train")


def test_a_split_written_to_gcs_is_the_local_split(tmp_path, monkeypatch):
  """--out=gs://...: the shards on (fake, in-memory) GCS are byte for byte the local ones, the index
  there describes the same split, and the local staging folder is gone afterwards."""
  import tempfile
  from tests import fake_gcs
  fs = fake_gcs.install(monkeypatch)
  (tmp_path / "files").mkdir()
  src = _file_source(str(tmp_path / "files"))
  local = tmp_path / "local" / "train"
  records.write_split(src, str(local), images_per_shard=4)
  staged, mkdtemp = [], tempfile.mkdtemp
  monkeypatch.setattr(tempfile, "mkdtemp", lambda **kw: staged.append(mkdtemp(**kw)) or staged[-1])
  r = records.write_split(src, "gs://bucket/prepared/train", images_per_shard=4)
  assert r == {"images": 6, "shards": 2, "folder": "gs://bucket/prepared/train"}
  assert len(staged) == 1 and not os.path.exists(staged[0])
  names = sorted(os.listdir(local))
  assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls("gs://bucket/prepared/train", detail=False)) == names
  down = tmp_path / "down" / "train"
  down.mkdir(parents=True)
  for name in names:
    data = fs.cat_file(f"gs://bucket/prepared/train/{name}")
    if name != records.INDEX:  # (the index is a zip with a time stamp inside)
      assert data == (local / name).read_bytes(), name
    (down / name).write_bytes(data)
  got = sources.load_source(_records_cfg(tmp_path / "down").data, "train")
  for field in ("labels", "case_ids", "image_ids"):
    np.testing.assert_array_equal(getattr(got, field), getattr(src, field))
  for i in range(6):
    np.testing.assert_array_equal(numpy_pipeline._loader(got)(i), numpy_pipeline._loader(src)(i))
  with pytest.raises(UserError, match="already holds a prepared split"):
    records.write_split(src, "gs://bucket/prepared/train")
  # The command itself: no refusal of a gs:// --out any more.
  from configs import demo
  c = demo.get_config()
  done = prepare_data.prepare(c, "gs://bucket/demo/", splits=["test"], images_per_shard=10_000)
  assert done[0]["folder"] == "gs://bucket/demo/test" and fs.exists(f"gs://bucket/demo/test/{records.INDEX}")


def _smooth_files(folder):
  """Smooth images (what JPEG is made for) of every kind, short sides 19 to 36 around a short side
  of 24: grey JPEG (resized), RGB PNG at 24 (kept), 16-bit grey PNG, RGBA PNG, RGB JPEG (resized),
  grey PNG at 24 and a wide RGB PNG below it (kept)."""
  specs = [((30, 44), "L", "jpg"), ((28, 24), "RGB", "png"), ((26, 40), "I;16", "png"), ((40, 29), "RGBA", "png"),
           ((36, 48), "RGB", "jpg"), ((24, 24), "L", "png"), ((19, 50), "RGB", "png")]
  paths = []
  for i, ((h, w), mode, ext) in enumerate(specs):
    yy, xx = np.mgrid[0:h, 0:w]
    c = {"L": 1, "I;16": 1, "RGB": 3, "RGBA": 4}[mode]
    x = np.stack([0.5 + 0.4 * np.sin(xx / (4.0 + k) + i) * np.cos(yy / (6.0 + k)) for k in range(c)], -1)
    if mode == "I;16":
      im = Image.fromarray((x[..., 0] * 65535).astype(np.uint16))
    else:
      x = (x * 255).astype(np.uint8)
      im = Image.fromarray(x[..., 0] if c == 1 else x)
    path = os.path.join(folder, f"s{i}.{ext}")
    im.save(path, **({"quality": 90} if ext == "jpg" else {}))
    paths.append(path)
  n = len(paths)
  return sources.Source("files", labels=np.arange(n) % 2, case_ids=[f"p{i // 2}" for i in range(n)],
                        image_ids=[f"im{i}" for i in range(n)], num_classes=2, paths=paths, class_names=("no", "yes"))


def _reference(path, size):
  """The original file's pixels (Pillow; 16-bit kept), resized with OpenCV's area filter."""
  with Image.open(path) as im:
    x = np.asarray(im if im.mode in ("L", "I;16") else im.convert("RGB"))
  if size == x.shape[:2]:
    return x
  return cv2.resize(x, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def _record_pixels(data: bytes):
  with Image.open(io.BytesIO(data)) as im:
    return im.format, np.asarray(im)


@pytest.mark.parametrize("encoding", ["jpeg", "png"])
def test_a_split_prepared_at_a_short_side(tmp_path, encoding):
  (tmp_path / "files").mkdir()
  src = _smooth_files(str(tmp_path / "files"))
  folder = tmp_path / "prepared" / "train"
  r = records.write_split(src, str(folder), images_per_shard=3, short_side=24, encoding=encoding, workers=3)
  assert r == {"images": 7, "shards": 3, "folder": str(folder)}
  got = sources.load_source(_records_cfg(tmp_path / "prepared", image_size=24).data, "train")
  for field in ("labels", "case_ids", "image_ids"):  # the same split, in the same order
    np.testing.assert_array_equal(getattr(got, field), getattr(src, field))
  assert got.class_names == ("no", "yes") and got.num_classes == 2
  with np.load(folder / records.INDEX) as z:
    idx = {k: z[k] for k in z.files}
  sizes = [Image.open(p).size[::-1] for p in src.paths]
  stored = [(24, 35), (28, 24), (24, 37), (33, 24), (24, 32), (24, 24), (19, 50)]
  np.testing.assert_array_equal(idx["original_size"], sizes)
  np.testing.assert_array_equal(idx["stored_size"], stored)
  lossy = "jpeg" if encoding == "jpeg" else "png"
  assert idx["stored_as"].tolist() == [lossy, "original", "png", lossy, lossy, "original", "original"]
  assert int(idx["short_side"]) == 24 and str(idx["encoding"]) == encoding
  assert int(idx["quality"]) == (95 if encoding == "jpeg" else 0)
  for i, path in enumerate(src.paths):
    data = got.records[i]
    fmt, pixels = _record_pixels(data)
    ref = _reference(path, stored[i])
    if idx["stored_as"][i] == "original":  # never upscaled: the file's own bytes
      assert data == open(path, "rb").read()
    elif idx["stored_as"][i] == "png":  # lossless: exactly the resize (16-bit stays 16-bit)
      assert fmt == "PNG" and pixels.dtype == ref.dtype
      np.testing.assert_array_equal(pixels, ref)
    else:  # JPEG quality 95 (the pixels of Pillow's), grey kept grey and RGB kept RGB (alpha dropped)
      assert fmt == "JPEG" and pixels.shape == ref.shape
      buf = io.BytesIO()
      Image.fromarray(ref).save(buf, format="JPEG", quality=95)
      assert np.abs(pixels.astype(int) - _record_pixels(buf.getvalue())[1].astype(int)).mean() < 0.5
      assert np.abs(pixels.astype(int) - ref.astype(int)).mean() < (1.5 if ref.ndim == 2 else 3.5)
  # The pipelines read them: a pair of views at 24 px from every image (numpy, and grain's workers)
  c = _records_cfg(tmp_path / "prepared", image_size=24)
  batch = _batches(numpy_pipeline, got, c, n=1)[0]
  assert batch["view_a"].shape[1:3] == (24, 24)
  if encoding == "png":
    tf = pytest.importorskip("tensorflow")
    for i in np.flatnonzero(idx["stored_as"] == "png"):  # what OpenCV wrote, TensorFlow decodes as Pillow does
      pixels = _record_pixels(got.records[i])[1]
      tf_pixels = tf.io.decode_png(got.records[i], dtype=tf.as_dtype(pixels.dtype)).numpy()
      np.testing.assert_array_equal(tf_pixels, pixels.reshape(tf_pixels.shape))


def test_a_run_above_the_prepared_short_side_is_refused(tmp_path):
  (tmp_path / "files").mkdir()
  src = _smooth_files(str(tmp_path / "files"))
  records.write_split(src, str(tmp_path / "small" / "train"), short_side=24)
  with pytest.raises(UserError) as e:
    sources.load_source(_records_cfg(tmp_path / "small", image_size=32).data, "train")
  message = str(e.value)
  assert "\n" not in message and "--short_side=24" in message and "data.image_size=32" in message
  assert "--short_side=32 (or larger)" in message and "data.image_size to 24 or less" in message
  assert len(sources.load_source(_records_cfg(tmp_path / "small", image_size=24).data, "train")) == 7
  records.write_split(src, str(tmp_path / "full" / "train"))  # full size: any image_size
  assert len(sources.load_source(_records_cfg(tmp_path / "full", image_size=512).data, "train")) == 7
  with np.load(tmp_path / "full" / "train" / records.INDEX) as z:
    assert int(z["short_side"]) == 0 and str(z["encoding"]) == "original" and int(z["quality"]) == 0
    assert set(z["stored_as"].tolist()) == {"original"}
    np.testing.assert_array_equal(z["original_size"], z["stored_size"])
  with pytest.raises(UserError, match="give --short_side=N too"):
    records.write_split(src, str(tmp_path / "png0" / "train"), encoding="png")
  assert not (tmp_path / "png0" / "train" / records.INDEX).exists()
  # An index written before the resize existed (no short_side) reads as full size.
  with np.load(tmp_path / "small" / "train" / records.INDEX) as z:
    old = {k: z[k] for k in z.files if k not in ("original_size", "stored_size", "stored_as", "short_side",
                                                 "encoding", "quality")}
  np.savez(tmp_path / "small" / "train" / records.INDEX, **old)
  assert len(sources.load_source(_records_cfg(tmp_path / "small", image_size=512).data, "train")) == 7
  # An image that cannot be decoded is named, on the worker threads as on one, and no index is written.
  with open(src.paths[3], "r+b") as f:
    f.truncate(300)
  with pytest.raises(UserError, match=r"cannot decode image im3 \(.*s3.png\)"):
    records.write_split(src, str(tmp_path / "cut" / "train"), images_per_shard=2, short_side=24, workers=2)
  assert not (tmp_path / "cut" / "train" / records.INDEX).exists()


def test_the_command_at_a_short_side_keeps_the_splits(tmp_path):
  """prepare-data --short_side=16 --encoding=png on the demo's in-memory data: every split holds the
  same ids, labels and cases, each image is the area downscale of the original, and the demo's
  data.image_size=32 is refused on it."""
  out = tmp_path / "prepared16"
  cmd = [sys.executable, "-m", "medssl_jax", "prepare-data", "--config=configs/demo.py", f"--out={out}",
         "--splits=train,test", "--short_side=16", "--encoding=png"]
  p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert p.returncode == 0, p.stderr[-2000:]
  from configs import demo
  original, prepared = demo.get_config(), demo.get_config()
  with prepared.unlocked():
    prepared.data.source, prepared.data.path = "records", str(out)
  with pytest.raises(UserError, match=r"--short_side=16, below data.image_size=32"):
    sources.load_source(prepared.data, "train")
  with prepared.unlocked():
    prepared.data.image_size = 16
  for split in ("train", "test"):
    a, b = sources.load_source(original.data, split), sources.load_source(prepared.data, split)
    for field in ("labels", "case_ids", "image_ids"):
      np.testing.assert_array_equal(getattr(b, field), getattr(a, field))
    with np.load(out / split / records.INDEX) as z:
      assert int(z["short_side"]) == 16 and str(z["encoding"]) == "png"
      np.testing.assert_array_equal(z["original_size"], np.tile(a.images.shape[1:3], (len(a), 1)))
      np.testing.assert_array_equal(z["stored_size"], np.full((len(a), 2), 16))
    for i in (0, 7, len(a) - 1):
      ref = cv2.resize(a.images[i], (16, 16), interpolation=cv2.INTER_AREA).reshape(16, 16, -1)
      np.testing.assert_array_equal(numpy_pipeline._loader(b)(i), ref)
  bad = subprocess.run(cmd[:-3] + [f"--out={tmp_path / 'x'}", "--encoding=webp"], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
  assert bad.returncode != 0 and "encoding" in bad.stderr
