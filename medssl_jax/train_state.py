"""The training state: step, parameters, batch-norm statistics and optimiser state."""
from typing import Any

import flax
import optax


@flax.struct.dataclass
class TrainState:
  step: Any
  params: Any
  batch_stats: Any
  opt_state: Any
  apply_fn: Any = flax.struct.field(pytree_node=False, default=None)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False, default=None)

  def apply_gradients(self, grads, batch_stats):
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                        batch_stats=batch_stats, opt_state=opt_state)
