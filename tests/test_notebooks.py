"""The notebooks run headless, from notebooks/, on the tiny model: each cell without an error.

Parameters are overridden papermill-style (assignments appended to the cell tagged "parameters").
The quickstart also runs its Colab install cell for real, as `pip install --dry-run --no-deps
--ignore-installed git+file://<this checkout>`: pip clones and builds the package (its report says
what it would install) but changes nothing.
"""

import json
import os
import pathlib
import subprocess
import sys
import time

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
CELL_TIMEOUT = 300  # seconds; the longest cell, the training run, takes well under a minute
# the reading check (40 questions an evaluation) has tests of its own (test_training)
SHORT_RUN = ["--config.sft.steps=8", "--config.rl.steps=2", "--config.eval.num_prompts=4",
             "--config.eval.phrasings=False"]
# the quickstart's training cell only has to run: the shortest run with every phase
SHORTEST_RUN = ["--config.sft.steps=2", "--config.rl.steps=1", "--config.eval.num_prompts=2",
                "--config.eval.phrasings=False", "--config.eval.at_start=False"]


def _execute(name, **params):
  """(executed notebook, seconds, its stdout) with `params` assigned after the defaults."""
  nb = nbformat.read(NOTEBOOKS / name, as_version=4)
  cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
  cell.source += "\n\n# injected by tests/test_notebooks.py\n" + "".join(
      f"{k} = {v!r}\n" for k, v in params.items())
  nb.cells.append(nbformat.v4.new_code_cell("print('kernel:', sys.executable)"))
  # the kernel (and what it starts) imports this checkout, wherever an editable install points
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(
      [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
  client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT,
                          resources={"metadata": {"path": str(NOTEBOOKS)}})
  start = time.perf_counter()
  client.execute(env=env)  # raises CellExecutionError, with the traceback, on any error
  seconds = time.perf_counter() - start
  print(f"{name}: {seconds:.1f} s")
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  stdout = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stdout")
  kernel = stdout.rsplit("kernel: ", 1)[1].strip()
  assert os.path.realpath(kernel) == os.path.realpath(sys.executable)
  return nb, seconds, stdout


def _images(nb):
  return [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]


def test_notebooks_are_saved_without_outputs():
  for path in sorted(NOTEBOOKS.glob("*.ipynb")):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4, path
    for cell in nb.cells:
      if cell.cell_type == "code":
        assert cell.outputs == [] and cell.execution_count is None, (path, cell.id)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert first.metadata.get("tags") == ["parameters"], path
    lines = [l.lstrip() for c in nb.cells if c.cell_type == "code" for l in c.source.splitlines()]
    assert not [l for l in lines if l.startswith(("!", "%"))], path  # no shell or line magics


def test_quickstart_installs_from_git_and_trains(tmp_path):
  git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                       text=True)
  if git.returncode:
    pytest.skip(f"{ROOT} is not a git checkout: no git URL to install from")
  report, workdir = tmp_path / "pip_report.json", tmp_path / "quickstart"
  _, seconds, stdout = _execute(
      "quickstart.ipynb", INSTALL=True, GTALIGN_GIT_URL=f"file://{ROOT}",
      PIP_ARGS=["--dry-run", "--no-deps", "--ignore-installed", "--report", str(report)],
      MODEL="tiny-random", WORKDIR=str(workdir), TRAIN_FLAGS=SHORTEST_RUN)
  installs = json.loads(report.read_text())["install"]
  assert [i["metadata"]["name"] for i in installs] == ["gtalign"]
  assert installs[0]["download_info"]["url"] == f"file://{ROOT}"
  assert installs[0]["download_info"]["vcs_info"]["commit_id"] == git.stdout.strip()
  assert "selection (max LLM + user): VQ_CQ -> VQ_AQ" in stdout
  assert "--config=configs/grpo.py:tiny" in stdout and "| policy |" in stdout
  assert os.path.getsize(workdir / "eval.json") > 0


def test_workflow_samples_scores_steers_and_trains(tmp_path):
  workdir = tmp_path / "workflow"
  nb, seconds, stdout = _execute("gtalign_workflow.ipynb", MODEL="tiny-random",
                                 WORKDIR=str(workdir), TRAIN_FLAGS=SHORT_RUN)
  assert "sampled DQ: valid=" in stdout and "sampled VQ: valid=" in stdout
  assert "parsed payoff: {'DQ_AQ': {'LLM': 1.0, 'user': 2.0}" in stdout
  assert "chosen key: VQ_CQ" in stdout
  assert "selection (max LLM + user): VQ_CQ -> VQ_AQ" in stdout
  assert "key named in <analyze>:" in stdout
  assert "eval.json policies: start, base_plain, after_sft, trained" in stdout
  assert "metrics.jsonl: 10 steps (8 SFT, 2 RL)" in stdout
  assert len(_images(nb)) == 2
  markdown = [o.data["text/markdown"] for c in nb.cells for o in c.get("outputs", [])
              if "text/markdown" in o.get("data", {})]
  assert any("| VQ | CQ | True |" in m for m in markdown)
  assert any("| trained |" in m for m in markdown)
