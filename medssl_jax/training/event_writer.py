"""TensorBoard scalars without TensorFlow, for the TF-free setup (JAX + the NumPy host pipeline).

clu's SummaryWriter needs TensorFlow. This writer has the part of clu's MetricWriter interface
that the loops use (write_scalars, write_hparams, flush, close) and writes TensorBoard event
files with the `tensorboard` package's own event writer and protos, which need no TensorFlow.
"""
import time

from absl import logging


class EventFileScalarWriter:
  """Scalar summaries in `<logdir>/events.out.tfevents.*`, readable by TensorBoard."""

  def __init__(self, logdir: str):
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    self._event, self._summary = event_pb2.Event, summary_pb2.Summary
    self._writer = EventFileWriter(logdir)

  def write_scalars(self, step: int, scalars: dict) -> None:
    values = [self._summary.Value(tag=k, simple_value=float(v)) for k, v in scalars.items()]
    self._writer.add_event(self._event(wall_time=time.time(), step=int(step), summary=self._summary(value=values)))

  def write_hparams(self, hparams: dict) -> None:
    logging.info("hyperparameters: %s", hparams)  # the full config is in config.json

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


class NullWriter:
  """Writes nothing (processes > 0; or no TensorBoard package at all)."""

  def write_scalars(self, step, scalars):
    del step, scalars

  def write_hparams(self, hparams):
    del hparams

  def flush(self):
    """Nothing is buffered."""

  def close(self):
    """Nothing is open."""
