"""The per-source attention of a DVME run averaged per class, as a heat map PNG (Truong et al.
2021, App. F, which shows these weights as a matrix).

Drawn from the run's results.json only (`attention_by_class`: `weights` (classes x sources),
`mean` over all test images, `sources`, `classes`), so it can be redrawn for any finished run:
rows are the classes and a last row 'all test images', columns the sources, each cell the mean
attention that source's token receives (each row sums to 1; a class without test images is NaN
and shown as 'n/a').
"""
import io

import numpy as np

from medssl_jax import jsonio
from medssl_jax.errors import UserError


def attention_table(results: dict) -> tuple:
  """(matrix (C + 1, S), row names, column names) plotted from a results dict."""
  att = results.get("attention_by_class")
  if not att:
    raise UserError("results.json has no attention_by_class (a run with dvme.attention=False has no "
                    "attention weights); plot a run with self-attention")
  weights = np.asarray(att["weights"], np.float64)
  matrix = np.vstack([weights, np.asarray(att["mean"], np.float64)[None]])
  classes = list(att.get("classes") or [f"class {c}" for c in range(len(weights))])
  return matrix, classes + ["all test images"], list(att["sources"])


def attention_figure(results: dict):
  """A matplotlib Figure: the heat map of `attention_table(results)`, values written in the cells."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  matrix, rows, cols = attention_table(results)
  fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(cols), 1.2 + 0.45 * len(rows)))
  im = ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=max(1e-6, float(np.nanmax(matrix, initial=0.0))),
                 aspect="auto")
  ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right", fontsize=8)
  ax.set_yticks(range(len(rows)), rows, fontsize=8)
  ax.axhline(len(rows) - 1.5, color="white", lw=2)
  for i in range(matrix.shape[0]):
    for j in range(matrix.shape[1]):
      v = matrix[i, j]
      ax.text(j, i, "n/a" if np.isnan(v) else f"{v:.3f}", ha="center", va="center", fontsize=7,
              color="white" if np.isnan(v) or v < 0.6 * np.nanmax(matrix) else "black")
  ax.set_title("attention each source receives, mean per class", fontsize=9)
  fig.colorbar(im, ax=ax, fraction=0.05)
  fig.tight_layout()
  return fig


def write(results_path, png_path) -> np.ndarray:
  """Reads results.json at `results_path`, writes the heat map to `png_path`; returns the matrix."""
  import matplotlib.pyplot as plt
  results = jsonio.read_json(results_path)
  fig = attention_figure(results)
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=120)
  plt.close(fig)
  jsonio.write_bytes(png_path, buf.getvalue())
  return attention_table(results)[0]
