"""Image-file checks shared by the readers of image files (manifest, CheXpert)."""
import hashlib
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


def file_fingerprint(path: str) -> str:
  """sha256 (hex) of a file's bytes."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def check_no_duplicates_across_splits(paths_by_split: dict, where: str = "") -> None:
  """UserError when the same file content (sha256 of its bytes) is in two splits (leakage under two case
  ids or two names), naming both rows (path and split); duplicates within one split are allowed."""
  import concurrent.futures
  items = [(split, str(p)) for split, paths in paths_by_split.items() for p in paths if os.path.isfile(str(p))]
  with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(16, os.cpu_count() or 1))) as pool:
    digests = list(pool.map(lambda item: file_fingerprint(item[1]), items))
  check_no_duplicate_digests([(split, path, digest) for (split, path), digest in zip(items, digests)], where)


def check_no_duplicate_digests(items, where: str = "") -> None:
  """UserError when a content digest is in two splits; `items`: (split, name, digest) per image, in the
  order to report them (a name's first split seen is the one named first)."""
  first, clashes = {}, []
  for split, name, digest in items:
    seen = first.setdefault(digest, (split, name))
    if seen[0] != split:
      clashes.append(f"{seen[1]} (split {seen[0]!r}) and {name} (split {split!r})")
  if clashes:
    raise UserError(f"{len(clashes)} image file(s) have the same content in two splits{where}: "
                    + "; ".join(clashes[:5]) + ". An image must be in one split only; remove the copies")
