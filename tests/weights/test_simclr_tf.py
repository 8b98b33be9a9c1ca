"""--format simclr_tf (medssl_jax/weights/simclr_tf.py): google-research/simclr TF1 checkpoints.

The reference is an independent TensorFlow forward pass written here with `tf.nn` ops after the
repository's TF1 model code (resnet.py: `conv2d_fixed_padding` = explicit (k - 1) // 2 padding
then VALID for strided convolutions, SAME otherwise; BN epsilon 1e-5; 3x3/2 max pool SAME;
bottleneck blocks with the projection shortcut created first and the stride on the 3x3
convolution; model_util.py: the `head_contrastive/nl_{j}` projection head). It creates its
random variables in the order the TF code creates them and names them as `tf.layers` does
(`conv2d`, `conv2d_1`, ...), and the test writes them as a TF1 name-based checkpoint
(`tf.compat.v1.train.Saver`) with a global step, optimizer slots and a supervised head beside them.
"""
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import jax  # noqa: E402

from medssl_jax.commands import common, import_weights as import_lib  # noqa: E402
from medssl_jax import weights  # noqa: E402
from medssl_jax.errors import MissingFileError, UserError  # noqa: E402
from medssl_jax.models.contrastive import ContrastiveModel  # noqa: E402
from medssl_jax.models.resnet import ResNet  # noqa: E402
from medssl_jax.training import checkpoint as ckpt_lib  # noqa: E402
from medssl_jax.weights import simclr_tf  # noqa: E402
from tests.weights.refs import images as _images, rel_err as _close  # noqa: E402

BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


class TFReference:
  """SimCLR's TF1 ResNet + projection head as tf.nn ops; variables made (random) as they are used."""

  def __init__(self, seed=0, zeros=False):
    self.rng = np.random.RandomState(seed)
    self.zeros = zeros  # shapes only: no random draws (fast for wide models)
    self.vars = {}
    self.counts = {}

  def _new(self, scope, base):
    i = self.counts.get((scope, base), 0)
    self.counts[(scope, base)] = i + 1
    return f"{scope}/{base if i == 0 else f'{base}_{i}'}"

  def conv(self, x, filters, k, strides):
    cin = x.shape[-1]
    w = np.zeros((k, k, cin, filters), np.float32) if self.zeros else \
        (self.rng.randn(k, k, cin, filters) * np.sqrt(2.0 / (k * k * cin))).astype(np.float32)
    self.vars[self._new("base_model", "conv2d") + "/kernel"] = w
    if strides > 1:  # fixed_padding
      beg = (k - 1) // 2
      x = tf.pad(x, [[0, 0], [beg, k - 1 - beg], [beg, k - 1 - beg], [0, 0]])
    return tf.nn.conv2d(x, w, strides, "SAME" if strides == 1 else "VALID")

  def bn(self, x, scope, relu=True, center=True):
    c = x.shape[-1]
    name = self._new(scope, "batch_normalization")
    gamma = self.rng.uniform(0.5, 1.5, c).astype(np.float32)
    mean = self.rng.uniform(-0.5, 0.5, c).astype(np.float32)
    var = self.rng.uniform(0.5, 2.0, c).astype(np.float32)
    self.vars.update({f"{name}/gamma": gamma, f"{name}/moving_mean": mean, f"{name}/moving_variance": var})
    beta = None
    if center:
      beta = self.rng.uniform(-0.2, 0.2, c).astype(np.float32)
      self.vars[f"{name}/beta"] = beta
    x = tf.nn.batch_normalization(x, mean, var, beta, gamma, 1e-5)
    return tf.nn.relu(x) if relu else x

  def bottleneck(self, x, filters, strides, use_projection):
    shortcut = x
    if use_projection:
      shortcut = self.bn(self.conv(x, 4 * filters, 1, strides), "base_model", relu=False)
    x = self.bn(self.conv(x, filters, 1, 1), "base_model")
    x = self.bn(self.conv(x, filters, 3, strides), "base_model")
    x = self.bn(self.conv(x, 4 * filters, 1, 1), "base_model", relu=False)
    return tf.nn.relu(x + shortcut)

  def trunk(self, x, depth=50, width=1):
    x = self.bn(self.conv(x, 64 * width, 7, 2), "base_model")
    x = tf.nn.max_pool2d(x, 3, 2, "SAME")
    for g, n in enumerate(BLOCKS[depth]):
      x = self.bottleneck(x, 64 * width * 2**g, 1 if g == 0 else 2, True)
      for _ in range(1, n):
        x = self.bottleneck(x, 64 * width * 2**g, 1, False)
    return tf.reduce_mean(x, [1, 2])

  def head(self, h, num_layers=3, out_dim=128):
    x = h
    for j in range(num_layers):
      last = j == num_layers - 1
      dim = out_dim if last else h.shape[-1]
      w = (self.rng.randn(x.shape[-1], dim) / np.sqrt(x.shape[-1])).astype(np.float32)
      self.vars[f"head_contrastive/nl_{j}/dense/kernel"] = w
      x = self.bn(tf.matmul(x, w), f"head_contrastive/nl_{j}", relu=not last, center=not last)
    return x


def _save_tf1(variables: dict, prefix: str) -> str:
  """A TF1 name-based checkpoint of {name: array} (as tf.compat.v1.train.Saver writes)."""
  with tf.Graph().as_default():
    var_list = {k: tf.compat.v1.Variable(v, name=f"v{i}") for i, (k, v) in enumerate(variables.items())}
    saver = tf.compat.v1.train.Saver(var_list)
    with tf.compat.v1.Session() as sess:
      sess.run(tf.compat.v1.global_variables_initializer())
      return saver.save(sess, prefix, write_meta_graph=False)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  root = tmp_path_factory.mktemp("simclr_tf")
  ref = TFReference(seed=0)
  x = _images()
  h = ref.trunk(tf.constant(x))
  z = ref.head(h)
  variables = dict(ref.vars)
  variables["global_step"] = np.array(250228, np.int64)
  variables["base_model/conv2d/kernel/Momentum"] = np.ones_like(ref.vars["base_model/conv2d/kernel"])
  variables["head_contrastive/nl_0/dense/kernel/Momentum"] = np.ones_like(ref.vars["head_contrastive/nl_0/dense/kernel"])
  variables["head_supervised/linear_layer/dense/kernel"] = np.zeros((2048, 10), np.float32)
  variables["head_supervised/linear_layer/dense/bias"] = np.zeros((10,), np.float32)
  prefix = _save_tf1(variables, str(root / "r50_1x_sk0" / "model.ckpt-250228"))
  return x, h.numpy(), z.numpy(), ref.vars, prefix, root


def test_imported_simclr_computes_what_the_tf_model_does(checkpoint):
  x, ref_h, ref_z, _, prefix, root = checkpoint
  out = str(root / "imported")
  assert common.call(import_lib.cli, ["medssl-jax import-weights", "--format", "simclr_tf", "--arch", "r50_1x_sk0",
                                      "--in", prefix, "--out", out]) == 0
  params, batch_stats, _ = ckpt_lib.restore_weights(out)
  assert set(params) == {"encoder", "head"} and set(batch_stats) == {"encoder", "head"}
  s = weights.stored_config(out)["model"]
  assert (s["downsample_padding"], s["input_norm"], s["width"], s["head_layers"], s["head_dim"]) == \
      ("tf_fixed", "none", 1.0, 3, 128)
  kw = tuple((k, s[k]) for k in ("bottleneck_width", "downsample_padding", "input_norm"))
  model = ContrastiveModel(depth=50, width=1.0, head_layers=3, head_dim=128, resnet_kw=kw)
  variables = {"params": params, "batch_stats": batch_stats}
  h, z = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  assert h.shape == (2, 2048) and z.shape == (2, 128)
  assert _close(np.asarray(h), ref_h) <= 1e-4
  assert _close(np.asarray(z), ref_z) <= 1e-4
  # The imported tree is exactly what a SimCLR run's model has (what train.init_checkpoint restores into).
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  to_shape = lambda t: jax.tree_util.tree_map(lambda a: tuple(a.shape), t)  # noqa: E731
  assert to_shape(dict(shapes["params"])) == to_shape(params)
  assert to_shape(dict(shapes["batch_stats"])) == to_shape(batch_stats)
  # The setting matters: torchvision's padding (max pool padded (1, 1)) computes something else.
  sym = ResNet(depth=50, downsample_padding="symmetric")
  h_sym = jax.jit(lambda v, x: sym.apply(v, x, train=False))(
      {"params": params["encoder"], "batch_stats": batch_stats["encoder"]}, x)
  assert _close(np.asarray(h_sym), ref_h) > 1e-2
  # A directory reads its latest checkpoint; the config records the .index digest.
  assert weights.stored_config(out)["imported_weights"]["sha256"]
  p2, _, _ = simclr_tf.load(str(root / "r50_1x_sk0"), "r50_1x_sk0")
  np.testing.assert_array_equal(p2["head"]["bn_2"]["scale"], params["head"]["bn_2"]["scale"])
  assert "bias" not in params["head"]["bn_2"]  # the last head layer has no beta (center=False)


@pytest.mark.parametrize("depth,width", [(50, 2), (101, 1)])
def test_layout_names_and_shapes_match_the_tf_code(depth, width):
  """Every trunk variable the TF code creates, by name and shape, for a wider and a deeper model
  (the reference runs eagerly on one 8-px image; nothing is converted)."""
  ref = TFReference(zeros=True)
  ref.trunk(tf.constant(_images(n=1, size=8)), depth=depth, width=width)
  arch = f"r{depth}_{width}x_sk0"
  assert simclr_tf.expected_shapes(arch) == {k: v.shape for k, v in ref.vars.items()}
  assert simclr_tf.model_settings(arch)["width"] == float(width)


class _Shapes:
  def __init__(self, variables):
    self.variables = variables

  def get_variable_to_shape_map(self):
    return {k: list(np.shape(v)) for k, v in self.variables.items()}

  def get_tensor(self, name):
    return self.variables[name]


def test_mismatching_checkpoints_are_refused(checkpoint, tmp_path):
  _, _, _, variables, _, _ = checkpoint
  bad = dict(variables, **{"base_model/conv2d_20/kernel": np.zeros((3, 3, 64, 64), np.float32)})
  with pytest.raises(UserError) as e:
    simclr_tf.from_reader(_Shapes(bad), "r50_1x_sk0")
  want = simclr_tf.expected_shapes("r50_1x_sk0")["base_model/conv2d_20/kernel"]
  assert "\n" not in str(e.value)
  assert f"'base_model/conv2d_20/kernel' has shape (3, 3, 64, 64) in the file but {want}" in str(e.value)
  with pytest.raises(UserError, match=r"width 1x"):
    simclr_tf.from_reader(_Shapes(variables), "r50_2x_sk0")
  with pytest.raises(UserError, match="'base_model/conv2d_53/bias'"):  # e.g. a squeeze-excitation layer
    simclr_tf.from_reader(_Shapes(dict(variables, **{"base_model/conv2d_53/bias": np.zeros(8, np.float32)})),
                          "r50_1x_sk0")
  no_head = {k: v for k, v in variables.items() if not k.startswith("head_contrastive/")}  # a SimCLR v1 file
  params, batch_stats, settings = simclr_tf.from_reader(_Shapes(no_head), "resnet50_1x")
  assert set(params) == {"encoder"} and "head_layers" not in settings
  with pytest.raises(UserError, match="_sk1"):
    simclr_tf.model_settings("r50_1x_sk1")
  with pytest.raises(UserError, match="expected a SimCLR name"):
    simclr_tf.model_settings("resnet18")
  with pytest.raises(MissingFileError, match="no TF checkpoint"):
    simclr_tf.load(str(tmp_path / "model.ckpt-1"), "r50_1x_sk0")
