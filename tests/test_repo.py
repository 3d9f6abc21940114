"""The repository's promises about itself: CI runs the README's test command verbatim."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _readme_commands():
  readme = (ROOT / "README.md").read_text()
  quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
  return re.findall(r"```bash\n(.*?)\n```", quickstart, flags=re.S)


def test_quickstart_is_two_commands_and_ci_runs_the_second():
  commands = _readme_commands()
  assert len(commands) == 2, commands
  assert all("\n" not in c for c in commands)
  install_run, install_test = commands
  assert install_run.startswith("pip install -e . && python -m gtalign.")
  ci_lines = [l for l in (ROOT / ".ci" / "run").read_text().splitlines()
              if l and not l.startswith("#") and not l.startswith(("set ", "cd "))]
  assert ci_lines == [install_test]


def test_top_level_layout():
  for name in ("gtalign", "configs", "launch", "notebooks", "tests", "bench", "setup.py"):
    assert (ROOT / name).exists(), name


def test_readme_lists_every_pricing_policy():
  from gtalign.game.pricing import PRICING_POLICIES
  readme = (ROOT / "README.md").read_text()
  for name in PRICING_POLICIES:
    assert f"| `{name}" in readme, name
