"""The training state: step, parameters, batch-norm statistics, optimiser state, method state.

`extra` is whatever a pretraining method keeps besides the trained network (MoCo: the momentum
key encoder and the queue of keys; None for SimCLR and fine-tuning). Checkpoints save every
field that holds arrays (`checkpoint.state_items`), so `extra` is saved and restored with the rest.
"""
from typing import Any

import flax
import optax


@flax.struct.dataclass
class TrainState:
  step: Any
  params: Any
  batch_stats: Any
  opt_state: Any
  extra: Any = None
  apply_fn: Any = flax.struct.field(pytree_node=False, default=None)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False, default=None)

  def apply_gradients(self, grads, batch_stats):
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                        batch_stats=batch_stats, opt_state=opt_state)
