"""view_plan: the one op order both host pipelines run, checked with a recording op bundle."""

import pytest

from configs.base import get_base_config
from input_pipeline import view_plan


def recording_ops(log):
  def op(name):
    def fn(x, *args):
      key = args[0] if name not in ("to_channels", "resize", "clip") else None
      log.append((name, key))
      return x
    return fn
  return view_plan.Ops(**{f.name: op(f.name) for f in view_plan.dataclasses.fields(view_plan.Ops)})


def aug(**overrides):
  a = get_base_config().aug
  for k, v in overrides.items():
    setattr(a, k, v)
  return a


ALL_ON = dict(crop=True, rotation_degrees=10.0, flip=True, color_prob=0.8, grayscale_prob=0.2,
              additive_brightness=0.1, std_contrast=0.1, blur_prob=0.5)


def test_all_ops_in_order_each_with_its_own_key():
  log = []
  plan = view_plan.ViewPlan.from_config(aug(**ALL_ON), image_size=28, channels=3)
  view_plan.apply(plan, recording_ops(log), "image", keys=[f"k{i}" for i in range(view_plan.NUM_OPS)])
  # Geometry (crop, resize, rotation) on the decoded image first, then channels (issue 27).
  assert log == [("crop", "k0"), ("resize", None), ("rotation", "k1"), ("to_channels", None), ("flip", "k2"),
                 ("color_jitter", "k3"), ("grayscale", "k4"), ("additive_brightness", "k5"),
                 ("std_contrast", "k6"), ("clip", None), ("blur", "k7"), ("clip", None)]


def test_switched_off_ops_are_skipped_and_grey_images_skip_grayscale():
  log = []
  off = dict(ALL_ON, crop=False, rotation_degrees=0.0, flip=False, additive_brightness=0.0, std_contrast=0.0,
             blur_prob=0.0)
  plan = view_plan.ViewPlan.from_config(aug(**off), image_size=28, channels=1)
  view_plan.apply(plan, recording_ops(log), "image", keys=list(range(view_plan.NUM_OPS)))
  # Colour jitter always runs (its probability decides); its key index does not move.
  assert log == [("resize", None), ("to_channels", None), ("color_jitter", view_plan.COLOR), ("clip", None)]


def test_plan_reads_the_config():
  plan = view_plan.ViewPlan.from_config(aug(crop_area_min=0.2, crop_aspect_max=1.5), image_size=224, channels=3)
  assert plan.area_range[0] == 0.2 and plan.aspect_range[1] == 1.5
  assert plan.blur_kernel_size == 23  # about 10% of 224, odd


def test_bad_channel_count_is_refused():
  with pytest.raises(ValueError, match="channels must be 1 or 3, got 2"):
    view_plan.ViewPlan.from_config(aug(), image_size=28, channels=2)

