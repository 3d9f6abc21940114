"""Score any policy with the paper's metrics, per data source.

    python -m gtalign.evaluate --model=DIR_OR_WORKDIR_OR_NAME --data=world[:SEED]|DIR \
        [--sources=math-hard,ambig_qa] [--judge=rule|http://host:port/v1] [--num_prompts=N]

`--model` is a run's workdir (its newest checkpoint, with the config it was started with), an
exported Hugging Face directory (a run's `export/`), a .gguf file or a known model name (a base
model). `--data=world` is the built-in world's held-out split (a workdir's own seed unless
`world:SEED` says otherwise); a GTAlign data directory gives its test sets (`--sources`, default
the four training sources' test splits). Greedy completions, judged as training judges them;
per source: answer accuracy, U, L, welfare, lengths in tokens and characters, answers per 1k
tokens, epsilon-Pareto coverage, hypervolume (true and the original script's), regret, Nash social
welfare, and DA on DQ, CQ on VQ, key = table's pick and steering where they apply, each with a
95% bootstrap interval over prompts. Prompts over --max_prompt_length tokens are dropped with a
count. Writes `evaluate.md`, `evaluate.json` and each source's samples under --output.
"""

from __future__ import annotations

import os
import sys

from absl import flags, logging

from gtalign.utils import cli

_MODEL = flags.DEFINE_string("model", None, "A run's workdir, an exported HF directory, a .gguf "
                             "file or a known model name.", required=True)
_DATA = flags.DEFINE_string("data", "world", "world, world:SEED, or a GTAlign data directory.")
_SOURCES = flags.DEFINE_list("sources", [], "GTAlign sources to evaluate (default: math-hard, "
                             "medium, wildguard, ambig_qa); the OOD sets abg-coqa, advbench and "
                             "minerva by name.")
_JUDGE = flags.DEFINE_string("judge", "rule", "'rule' or an OpenAI-compatible base URL "
                             "(gtalign.serve serves one).")
_JUDGE_MODEL = flags.DEFINE_string("judge_model", "judge", "Model name sent to an HTTP judge.")
_JUDGE_MAX_TOKENS = flags.DEFINE_integer("judge_max_tokens", 1024, "max_tokens of an HTTP judge's "
                                         "replies.")
_NUM_PROMPTS = flags.DEFINE_integer("num_prompts", 0, "Prompts per source (0: all).")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 0, "Tokens per completion (0: the "
                                       "config's eval.max_new_tokens, 352 by default).")
_PRESET = flags.DEFINE_string("preset", "", "configs/grpo.py preset whose settings (the world's "
                              "sizes, the eval's lengths, dtype) a non-workdir model is "
                              "evaluated with; a workdir's own config is always used.")
_MAX_PROMPT_LENGTH = flags.DEFINE_integer("max_prompt_length", 2048,
                                          "Longer prompts are dropped (and counted).")
_STEERING = flags.DEFINE_integer("steering_prompts", 12, "Prompts per source whose table is "
                                 "edited to select each strategy and continued (0: none).")
_STEERING_EDIT = flags.DEFINE_string("steering_edit", "both", "Which rows a steering edit "
                                     "prices: both (a pricing change) or read (only the row "
                                     "the policy read); checked as eval.steering_edit.")
_EPS = flags.DEFINE_float("eps", 0.1, "epsilon of the Pareto coverage (a share of each axis's "
                          "range).")
_BOOTSTRAP = flags.DEFINE_integer("bootstrap", 1000, "Bootstrap resamples of the prompts.")
_OUTPUT = flags.DEFINE_string("output", None, "Output directory (default: evaluate/<model>).")
_DTYPE = flags.DEFINE_string("dtype", "", "Compute dtype (default: a workdir's own, else "
                             "bfloat16).")
_RESTYLE = flags.DEFINE_bool("restyle", False, "Ask each GTAlign test question in the policy's "
                              "own prompt style (its export's or config's) instead of the row's "
                              "own prompt (the paper's full instruction).")
_CHUNK = flags.DEFINE_integer("chunk", 18, "Prompts per generate call (a progress line each).")
_DIALOGUE_TURNS = flags.DEFINE_integer("dialogue_turns", 0, "> 0: also play each question as a "
                                       "greedy dialogue of up to this many turns with "
                                       "--simulator answering clarifying questions.")
_SIMULATOR = flags.DEFINE_string("simulator", "rule", "The simulated user of --dialogue_turns: "
                                 "'rule' (the world's) or an OpenAI-compatible base URL (an LLM "
                                 "user, for GTAlign sources).")
_SIMULATOR_MODEL = flags.DEFINE_string("simulator_model", "user", "Model name sent to an HTTP "
                                       "simulator.")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # configs
  from gtalign.evaluation import policy_eval
  policy_eval.evaluate(
      _MODEL.value, _DATA.value, _SOURCES.value, _JUDGE.value, _JUDGE_MODEL.value,
      _NUM_PROMPTS.value, _MAX_NEW_TOKENS.value, _MAX_PROMPT_LENGTH.value, _STEERING.value,
      _EPS.value, _BOOTSTRAP.value, _OUTPUT.value, _CHUNK.value, _DTYPE.value, _PRESET.value,
      _JUDGE_MAX_TOKENS.value, _RESTYLE.value, _DIALOGUE_TURNS.value, _SIMULATOR.value,
      _SIMULATOR_MODEL.value, _STEERING_EDIT.value)


if __name__ == "__main__":
  cli.run(main)
