"""data.pipeline='grain': the NumPy pipeline's batches, array for array, built on worker processes."""
import numpy as np
import pytest

from input_pipeline import backends, grain_pipeline, indexing, numpy_pipeline
from medssl_jax.errors import UserError
from tests.helpers import TOY_CASE_SIZES as SIZES, toy_pretrain_config as _cfg, toy_source as _source

pytest.importorskip("grain")


def _take(it, n):
  out = [next(it) for _ in range(n)]
  it.close()
  return out


def _assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert set(x) == set(y)
    for k in x:
      assert x[k].dtype == y[k].dtype, k
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.mark.parametrize("pairing,workers", [("case", 2), ("views", 0)])
def test_pretrain_batches_equal_the_numpy_pipeline(pairing, workers):
  src, c = _source(SIZES, size=12), _cfg(pairing)
  c.data.image_size, c.aug.color_prob, c.aug.blur_prob = 12, 0.8, 0.5  # random ops on
  c.data.host_workers = workers
  for kw in (dict(start_step=3), dict(start_step=1, process_index=1, process_count=2)):
    kw = dict(data_cfg=c.data, aug_cfg=c.aug, pairing=pairing, global_batch=4, seed=7) | kw
    want = _take(numpy_pipeline.pretrain_iterator(src, **kw), 4)  # crosses an epoch (8 cases / 4)
    _assert_same(_take(grain_pipeline.pretrain_iterator(src, **kw), 4), want)


def test_device_augmentation_host_part_travels_as_uint8():
  src, c = _source(SIZES, size=12), _cfg("views")
  c.data.image_size, c.aug.on_device, c.data.host_workers = 12, True, 1
  kw = dict(data_cfg=c.data, aug_cfg=c.aug, pairing="views", global_batch=4, seed=1)
  got = _take(grain_pipeline.pretrain_iterator(src, **kw), 2)
  assert got[0]["view_a"].dtype == np.uint8
  _assert_same(got, _take(numpy_pipeline.pretrain_iterator(src, **kw), 2))


def test_supervised_batches_equal_the_numpy_pipeline():
  src, c = _source(SIZES), _cfg()
  kw = dict(aug_cfg=c.aug, image_size=8, channels=1, global_batch=4, seed=2, start_step=2,
            indices=np.array([0, 2, 3, 5, 7, 9, 11, 13]))
  want = _take(numpy_pipeline.supervised_iterator(src, **kw), 3)
  _assert_same(_take(grain_pipeline.supervised_iterator(src, num_workers=2, **kw), 3), want)


def test_random_access_equals_the_streams():
  table, sizes, case_index, _ = indexing.pretrain_units(_source(SIZES), "case", 6)
  where = dict(global_batch=4, seed=5, process_index=1, process_count=2)
  stream = indexing.pair_stream(table, sizes, case_index, start_step=0, **where)
  for step in range(5):
    for got, want in zip(indexing.pair_batch(table, sizes, case_index, step=step, **where),
                         [next(stream) for _ in range(2)]):
      assert got[:3] == want[:3] and np.array_equal(got[3], want[3]) and np.array_equal(got[4], want[4])


def test_backend_name_and_refusals():
  assert backends.get("grain") is grain_pipeline and backends.short_name(grain_pipeline) == "grain"
  with pytest.raises(UserError, match="data.host_workers=-1"):
    grain_pipeline.workers(-1)
  assert grain_pipeline.workers(3) == 3 and grain_pipeline.workers(0) >= 1
  with pytest.raises(UserError, match="data.host_workers=4 sets grain's worker processes, but data.pipeline='numpy'"):
    backends.get("numpy", host_workers=4)
