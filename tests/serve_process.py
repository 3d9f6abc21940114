"""A `python -m gtalign.serve` subprocess on a free port, for the tests that talk HTTP to it."""

import os
import pathlib
import re
import subprocess
import sys
import time

import httpx

ROOT = pathlib.Path(__file__).resolve().parents[1]


class ServerProcess:
  def __init__(self, model_dir, log_path, *flags):
    self.log_path = log_path
    self.proc = subprocess.Popen(
        [sys.executable, "-m", "gtalign.serve", f"--model={model_dir}", "--served_name=tiny",
         "--port=0", *flags], cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=open(log_path, "w"), env={**os.environ, "JAX_PLATFORMS": "cpu"})
    deadline = time.time() + 120
    while time.time() < deadline:
      found = re.search(r"on (http://[\d.]+:\d+/v1)", log_path.read_text())
      if found:
        self.base_url = found.group(1)
        return
      if self.proc.poll() is not None:
        break
      time.sleep(0.2)
    self.proc.kill()
    raise RuntimeError(f"server did not start: {log_path.read_text()[-2000:]}")

  @property
  def root(self) -> str:
    return self.base_url[:-len("/v1")]

  def health(self) -> dict:
    return httpx.get(f"{self.root}/health", timeout=10).json()

  def close(self):
    self.proc.terminate()
    try:
      self.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
      self.proc.kill()
