"""Image-file checks shared by the readers of image files (manifest, CheXpert)."""
import os

from medssl_jax.errors import UserError


def _decode_problem(path: str):
  """None when Pillow decodes the whole image, else what went wrong. (`Image.verify()` alone
  reads only the headers: a JPEG cut short by an interrupted copy passes it.)"""
  from PIL import Image
  try:
    with Image.open(path) as im:
      im.load()
  except Exception as e:  # PIL raises many types for a bad file.
    return f"{type(e).__name__}: {e}"
  return None


def verify_images(paths, rows=None, chunk: int = 64) -> None:
  """Decodes every image fully with Pillow, on a thread pool (Pillow decodes without the GIL);
  UserError naming the files that cannot be decoded, with `rows[i]` (e.g. their manifest line)."""
  import concurrent.futures
  paths = [str(p) for p in paths]
  chunks = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]
  with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(16, os.cpu_count() or 1))) as pool:
    problems = [m for part in pool.map(lambda ps: [_decode_problem(p) for p in ps], chunks) for m in part]
  bad = [i for i, m in enumerate(problems) if m]
  if bad:
    shown = [f"unreadable image {paths[i]}" + (f" ({rows[i]})" if rows is not None else "") + f": {problems[i]}"
             for i in bad[:5]]
    raise UserError(f"{len(bad)} of {len(paths)} image file(s) cannot be decoded: " + "; ".join(shown)
                    + ". Replace or re-copy them, or leave them out of the data")
