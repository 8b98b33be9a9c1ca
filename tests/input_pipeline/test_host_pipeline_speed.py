"""benchmarks/host_pipeline_speed.py on a folder of three tiny images: the re-encoded copies and the table."""
import json

import numpy as np
from PIL import Image

from benchmarks import host_pipeline_speed
from input_pipeline import numpy_pipeline


def test_reencodes_at_the_short_side_and_times_both_kinds_of_file(tmp_path, capsys):
  rng = np.random.default_rng(0)
  folder = tmp_path / "images"
  folder.mkdir()
  Image.fromarray(rng.integers(0, 256, (60, 40), dtype=np.uint8)).save(folder / "grey.png")
  Image.fromarray(rng.integers(0, 256, (50, 90, 3), dtype=np.uint8)).save(folder / "rgb.jpg")
  Image.fromarray(rng.integers(0, 256, (20, 24), dtype=np.uint8)).save(folder / "small.png")  # not enlarged
  scratch = tmp_path / "small"
  out = tmp_path / "speed.json"
  host_pipeline_speed.main([f"--images={folder}", f"--out={out}", "--image_size=16", "--short_side=32",
                            "--pairs=4", "--batch=2", f"--scratch={scratch}", "--chexpert"])
  shapes = sorted(numpy_pipeline._decode(str(p)).shape for p in scratch.iterdir())
  assert shapes == [(20, 24, 1), (32, 58, 3), (48, 32, 1)]   # short side 32 (grey stays grey), 20 kept
  result = json.loads(out.read_text())
  assert [(r["images"], r["augmentation"].split()[0]) for r in result["rows"]] == [
      ("original files", "simclr"), ("original files", "chexpert"), ("32-px JPEG q95", "simclr"),
      ("32-px JPEG q95", "chexpert")]
  assert all(r["pairs_per_sec"] > 0 and r["pairs_per_cpu_sec"] > 0 for r in result["rows"])
  assert result["images"] == 3 and "--short_side=32" in result["command"]
  assert "32-px JPEG q95" in capsys.readouterr().out
