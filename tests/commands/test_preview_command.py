"""The pair preview on the real multi-image chest X-rays and on synthetic data."""
import json

from configs import covid_cxr_micle, demo
from input_pipeline import sources
from medssl_jax.commands import preview


def _unlocked(config):
  config.unlock()
  return config


def test_micle_preview_on_real_bags(shared_data, tmp_path):
  c = _unlocked(covid_cxr_micle.get_config())
  c.data.path = str(shared_data / "covid_cxr_multi")
  c.data.image_size = 32
  src = sources.load_source(c.data, "train")
  pairs = preview.write_preview(src, c, str(tmp_path), num_pairs=6)
  assert (tmp_path / "pairs.png").read_bytes()[:4] == b"\x89PNG"
  listed = json.loads((tmp_path / "pairs.json").read_text())["pairs"]
  assert listed == pairs and len(pairs) == 6
  ids = dict(zip(src.image_ids.tolist(), src.case_ids.tolist()))
  for p in pairs:
    # Every patient here has >= 2 frontal X-rays: two different images of one patient.
    assert p["distinct"] and p["image_id_a"] != p["image_id_b"]
    assert ids[p["image_id_a"]] == ids[p["image_id_b"]] == p["case_id"]


def test_simclr_preview_pairs_one_image(tmp_path):
  c = _unlocked(demo.get_config())
  c.data.synthetic.num_cases = 20
  src = sources.load_source(c.data, "train")
  pairs = preview.write_preview(src, c, str(tmp_path), num_pairs=3)
  assert all(p["image_id_a"] == p["image_id_b"] and not p["distinct"] for p in pairs)
