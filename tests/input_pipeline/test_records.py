"""data.source='records' (medssl-jax prepare-data): the same images, labels, cases and batches as
the source the shards were written from, in every host pipeline."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from configs.base import get_base_config
from input_pipeline import numpy_pipeline, sources
from input_pipeline.sources import records
from medssl_jax import prepare_data
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
  cmd = [sys.executable, "-m", "medssl_jax.cli", "prepare-data", "--config=configs/demo.py", f"--out={out}",
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
