"""Talk to a model: `python -m gtalign.sample --model=smollm2-135m-instruct --prompt="Hi"`.

`--batch_file` takes JSONL, one prompt per line: either a JSON string or an object with
"prompt" and optionally "system". Completions go to stdout (one JSON object per line in batch
mode); load time and throughput go to stderr.

`--game` treats each prompt as the user's question in the game: it is wrapped in the
game instruction exactly as training rendered it (prompt style and system message from the model
directory's gtalign_game.json, written by `gtalign.training.export`, unless --prompt_style or
--system say otherwise), generation stops after "</response>", and each completion is printed as
one JSON object with its parsed trace: blocks, payoff, chosen key, response and its action.

`--pricing` (with --game) plays each turn in two phases, as the server's game extension does:
the trace up to `</payoff>`, the table re-priced (`--pricing='{"policy": "per_token", "cost":
0.5, "payer": "user"}'`, the server's `gtalign.pricing` field) or replaced outright
(`--pricing='{"payoff": {...}}'`), then the rest continued from the model's own token ids
(`gtalign.game.turn`). A turn that stops before `<response>` says where in its "failure" field.
"""

from __future__ import annotations

import json
import sys
import time

from absl import app, flags, logging

from gtalign.game.trace import RESPONSE_END as GAME_STOP  # as in training
from gtalign.utils import cli
from gtalign.utils.errors import InvalidInput
from gtalign.utils.jsonl import read_jsonl


_MODEL = flags.DEFINE_string("model", "smollm2-135m-instruct",
                             "Known model name, Hugging Face model directory or .gguf file.")
_ADAPTER = flags.DEFINE_string(
    "adapter", None, "A LoRA adapter directory in PEFT format (a run's export/adapter) to run on "
    "--model, merged into its weights at start-up.")
_PROMPT = flags.DEFINE_string("prompt", None, "User message.")
_BATCH_FILE = flags.DEFINE_string("batch_file", None, "JSONL file of prompts (instead of --prompt).")
_SYSTEM = flags.DEFINE_string("system", None, "Optional system message.")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", None,
                                       "Tokens to generate at most (default 128, 256 with --game: "
                                       "a four-block trace is about 170).")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "Sampling temperature; 0 means greedy.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Keep only the k most likely tokens (0 = off).")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass (1 = off).")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1, "Completions per prompt.")
_STOP = flags.DEFINE_multi_string("stop", [], "Stop string (repeatable), e.g. --stop='</payoff>'.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_GAME = flags.DEFINE_bool("game", False,
                          "Treat each prompt as a game question: render the game instruction, "
                          "stop after </response> and print the parsed trace as JSON.")
_PROMPT_STYLE = flags.DEFINE_enum("prompt_style", None, ["full", "compact"],
                                  "With --game: the instruction style (default: the model "
                                  "directory's gtalign_game.json, else full).")
_PRICING = flags.DEFINE_string(
    "pricing", None, "With --game: a JSON object, the server's gtalign.pricing field "
    "({\"policy\": NAME, ...parameters}) or {\"payoff\": TABLE} to replace the table.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                           "Parameter and compute dtype.")


def read_batch_file(path: str) -> list[tuple[str, str | None]]:
  """(prompt, system) pairs from JSONL; errors name the file and line."""
  items = []
  for n, item in read_jsonl(path):
    if isinstance(item, str):
      items.append((item, None))
    elif isinstance(item, dict) and isinstance(item.get("prompt"), str):
      items.append((item["prompt"], item.get("system")))
    else:
      raise InvalidInput(f"{path}:{n}: expected a JSON string or an object with a string "
                       f"'prompt' key, got {json.dumps(item)[:80]}")
  if not items:
    raise InvalidInput(f"{path}: no prompts")
  return items


def chat_prompt_ids(tokenizer, prompt: str, system: str | None) -> list[int]:
  messages = ([{"role": "system", "content": system}] if system else []) + [
      {"role": "user", "content": prompt}]
  return tokenizer.encode(tokenizer.apply_chat_template(messages, add_generation_prompt=True))


def game_settings(model: str, prompt_style: str | None, system: str | None) -> dict:
  """{"prompt_style", "system"} for --game: the flags where given, else the model's export."""
  from gtalign.training.export import settings_for_model

  settings = settings_for_model(model)
  if prompt_style is not None:
    settings["prompt_style"] = prompt_style
  if system is not None:
    settings["system"] = system
  return settings


def game_prompt(tokenizer, question: str, settings: dict) -> str:
  """The prompt text for one question, rendered as training rendered it."""
  from gtalign.game import prompt as prompt_lib

  messages = prompt_lib.build_messages(question, settings["system"],
                                       style=settings["prompt_style"])
  return prompt_lib.render(tokenizer, messages)


def game_record(question: str, text: str, finish_reason: str, num_tokens: int) -> dict:
  """One --game output line: the completion and its parsed trace."""
  from gtalign.game import behaviour, payoff, trace

  parsed = trace.parse_trace(text)
  return {"question": question, "text": text, "blocks": parsed.blocks, "payoff": parsed.payoff,
          "chosen_key": parsed.chosen_key,
          "key_action": payoff.action(parsed.chosen_key) if parsed.chosen_key else None,
          "response": parsed.response, "action": behaviour.classify(parsed.response),
          "valid": parsed.valid, "format_ok": parsed.format_ok, "reason": parsed.reason,
          "finish_reason": finish_reason, "num_tokens": num_tokens}


def pricing_edit(spec: str | None):
  """The `turn.Edit` for --pricing (checked as the server checks its field), or None."""
  if spec is None:
    return None
  from gtalign.serving import game
  from gtalign.serving.protocol import RequestError
  try:
    field = json.loads(spec)
  except json.JSONDecodeError as e:
    raise InvalidInput(f"--pricing is not JSON: {e}") from None
  if not isinstance(field, dict):
    raise InvalidInput("--pricing must be a JSON object")
  request = ({"game": True, "payoff": field["payoff"]} if set(field) == {"payoff"}
             else {"game": True, "pricing": field})
  try:
    return game.parse_options(request).edit
  except RequestError as e:
    raise InvalidInput(f"--pricing: {e}") from None


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # keep JAX's backend probing out of the transcript
  if (_PROMPT.value is None) == (_BATCH_FILE.value is None):
    raise app.UsageError("give exactly one of --prompt or --batch_file")
  if _PRICING.value is not None and not _GAME.value:
    raise app.UsageError("--pricing needs --game")
  edit = pricing_edit(_PRICING.value)
  from gtalign.models.checkpoints import load_pretrained
  from gtalign.sampling.sampler import Sampler, SamplingConfig

  items = (read_batch_file(_BATCH_FILE.value) if _BATCH_FILE.value
           else [(_PROMPT.value, _SYSTEM.value)])
  start = time.perf_counter()
  config, params, tokenizer = load_pretrained(_MODEL.value, dtype=_DTYPE.value)
  if tokenizer is None:
    raise app.UsageError(f"{_MODEL.value} has no tokenizer files; cannot encode a prompt")
  if _ADAPTER.value:
    from gtalign.adapters import peft_format
    params = peft_format.load_onto(_ADAPTER.value, config, params)
  load_seconds = time.perf_counter() - start
  stop = tuple(_STOP.value)
  if _GAME.value:
    settings = game_settings(_ADAPTER.value or _MODEL.value, _PROMPT_STYLE.value, _SYSTEM.value)
    prompts = [tokenizer.encode(game_prompt(
        tokenizer, q, settings if s is None else {**settings, "system": s})) for q, s in items]
    stop = tuple(dict.fromkeys((GAME_STOP, *stop)))
  else:
    prompts = [chat_prompt_ids(tokenizer, p, s or _SYSTEM.value) for p, s in items]
  max_new_tokens = _MAX_NEW_TOKENS.value or (256 if _GAME.value else 128)
  sampling = SamplingConfig(max_new_tokens=max_new_tokens,
                            temperature=_TEMPERATURE.value, top_k=_TOP_K.value,
                            top_p=_TOP_P.value, num_samples=_NUM_SAMPLES.value,
                            stop=stop, include_stop_str=_GAME.value, seed=_SEED.value)
  sampler = Sampler(config, tokenizer)
  if edit is not None:
    from gtalign.game import turn
    begin = time.perf_counter()
    for t in turn.play(sampler, params, prompts, sampling, edit):
      print(json.dumps({"prompt_index": t.prompt_index, "sample_index": t.sample_index,
                        "question": items[t.prompt_index][0], **t.record(),
                        "finish_reason": t.finish_reason, "num_tokens": len(t.tokens)},
                       ensure_ascii=False))
    print(f"[load {load_seconds:.1f}s | {len(prompts)} prompt(s) in two phases, "
          f"{time.perf_counter() - begin:.1f}s incl. compilation]", file=sys.stderr)
    return
  out = sampler.generate(params, prompts, sampling)
  if _GAME.value:
    for r, text in enumerate(out.texts):
      i = int(out.prompt_index[r])
      record = game_record(items[i][0], text, out.finish_reasons[r], int(out.lengths[r]))
      print(json.dumps({"prompt_index": i, "sample_index": int(out.sample_index[r]), **record},
                       ensure_ascii=False))
  elif _BATCH_FILE.value or _NUM_SAMPLES.value > 1:
    for r, text in enumerate(out.texts):
      print(json.dumps({"prompt_index": int(out.prompt_index[r]),
                        "sample_index": int(out.sample_index[r]), "text": text,
                        "finish_reason": out.finish_reasons[r],
                        "num_tokens": int(out.lengths[r])}, ensure_ascii=False))
  else:
    print(out.texts[0])
  rate = out.num_tokens / max(out.decode_seconds, 1e-9)
  print(f"[load {load_seconds:.1f}s | {len(prompts)} prompt(s) x {_NUM_SAMPLES.value} sample(s), "
        f"longest prompt {max(map(len, prompts))} tokens | prefill {out.prefill_seconds:.2f}s, "
        f"decode {out.decode_seconds:.2f}s, both incl. compilation | {out.num_tokens} new tokens, "
        f"{rate:.1f} tok/s | finish: {','.join(sorted(set(out.finish_reasons)))}]",
        file=sys.stderr)


if __name__ == "__main__":
  cli.run(main)
