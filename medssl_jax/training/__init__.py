"""Training machinery shared by every run mode and method.

  loop.py          the step loop (metrics, TensorBoard, checkpoints, SIGTERM, NaN stop)
  state.py         TrainState (params, BN statistics, optimiser state, method state)
  checkpoint.py    Orbax checkpoints of every field of the state; encoder weights for other runs
  sharding.py      the device mesh, batch sharding, host-to-device prefetch
  optim.py         LARS / SGD / Adam and learning-rate schedules (optax)
  plateau.py       ReduceLROnPlateau and early stopping on a validation metric (Truong et al.)
  validation.py    fine-tuning's periodic validation: best state, lr plateau, early stop
  workdir.py       a run's saved settings and the refusal to resume with other settings
  event_writer.py  TensorBoard scalars without TensorFlow
"""
