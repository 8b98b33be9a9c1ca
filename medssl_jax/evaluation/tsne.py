"""t-SNE maps of embeddings, coloured by class, as PNG files (Truong et al. 2021, Fig. 2, App. D).

`tsne_2d` runs sklearn's `TSNE` (2 components, PCA initialisation, learning rate 'auto', a fixed
`random_state`) on the features as they are; `class_groups` gives each image the colour group it
is plotted in; `write_png` draws one scatter plot with matplotlib's Agg backend. Fusion runs
(`medssl_jax/runs/dvme.py`) use them for each source's test features and for the DVME embedding.

Readings where the paper is silent (Truong et al. show the maps but give no t-SNE settings):
perplexity 30 (sklearn's default), lowered to (n - 1) / 3 for fewer than 91 points (sklearn needs
perplexity < n); no PCA reduction or scaling of the features before t-SNE; a multi-label image is
coloured by its one positive label, 'none' without any and 'several' with more than one (Truong's
NIH task keeps only images with at most one finding, so there every image has one colour).
"""
import io

import numpy as np
from threadpoolctl import threadpool_limits

from medssl_jax import jsonio

PERPLEXITY = 30.0


def perplexity_for(n: int, perplexity: float = PERPLEXITY) -> float:
  """The perplexity used for `n` points: `perplexity`, at most (n - 1) / 3."""
  return float(min(perplexity, (n - 1) / 3.0))


def tsne_2d(x, seed: int, perplexity: float = PERPLEXITY) -> np.ndarray:
  """(N, D) features -> (N, 2) t-SNE coordinates (sklearn, fixed seed)."""
  from sklearn.manifold import TSNE
  x = np.asarray(x, np.float32)
  if x.ndim != 2 or len(x) < 4:
    raise ValueError(f"t-SNE needs (N, D) features with N >= 4; got shape {x.shape}")
  tsne = TSNE(n_components=2, perplexity=perplexity_for(len(x), perplexity), init="pca",
              learning_rate="auto", random_state=int(seed))
  # One OpenMP thread: sklearn's Barnes-Hut gradient spins its OpenMP threads, and on a busy host
  # (measured: 2 cores at load 15) 48 points took 36 s with 2 threads and 1.7 s with one.
  with threadpool_limits(limits=1, user_api="openmp"):
    return tsne.fit_transform(x).astype(np.float32)


def class_groups(labels, task: str, class_names=()) -> tuple:
  """(group index per image (N,), group names): what each image is coloured by.

  multiclass: its class (names from `class_names`, else 'class k'); multilabel: its one
  positive label (> 0.5; NaN is not positive), 'none' or 'several'.
  """
  labels = np.asarray(labels)
  if task == "multiclass":
    k = int(max(labels.max(initial=-1) + 1, len(class_names)))
    names = [str(class_names[c]) if c < len(class_names) else f"class {c}" for c in range(k)]
    return labels.astype(np.int64), names
  pos = np.nan_to_num(labels.astype(np.float64), nan=0.0) > 0.5
  n_labels = pos.shape[1]
  names = [str(class_names[j]) if j < len(class_names) else f"label {j}" for j in range(n_labels)]
  count = pos.sum(1)
  groups = np.where(count == 0, n_labels, np.where(count == 1, pos.argmax(1), n_labels + 1))
  return groups.astype(np.int64), names + ["none", "several"]


def write_png(coords, groups, names, title: str, path) -> None:
  """Scatter of (N, 2) `coords`, one colour per group present, legend by group name."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  coords, groups = np.asarray(coords), np.asarray(groups)
  fig, ax = plt.subplots(figsize=(5, 4.5))
  cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
  for g in np.unique(groups):
    m = groups == g
    ax.scatter(coords[m, 0], coords[m, 1], s=8, alpha=0.8, color=cmap(int(g) % cmap.N),
               label=f"{names[g]} ({int(m.sum())})")
  ax.set_title(title, fontsize=10)
  ax.set_xticks([])
  ax.set_yticks([])
  ax.legend(fontsize=7, markerscale=2, loc="best")
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=120)
  plt.close(fig)
  jsonio.write_bytes(path, buf.getvalue())
