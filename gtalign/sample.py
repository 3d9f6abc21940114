"""Talk to a model: `python -m gtalign.sample --model=smollm2-135m-instruct --prompt="Hi"`."""

from __future__ import annotations

import sys
import time

from absl import app, flags, logging

_MODEL = flags.DEFINE_string("model", "smollm2-135m-instruct",
                             "Known model name, Hugging Face model directory or .gguf file.")
_PROMPT = flags.DEFINE_string("prompt", None, "User message.", required=True)
_SYSTEM = flags.DEFINE_string("system", None, "Optional system message.")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 128, "Tokens to generate at most.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "Sampling temperature; 0 means greedy.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                           "Parameter and compute dtype.")


def chat_prompt_ids(tokenizer, prompt: str, system: str | None) -> list[int]:
  messages = ([{"role": "system", "content": system}] if system else []) + [
      {"role": "user", "content": prompt}]
  return tokenizer.encode(tokenizer.apply_chat_template(messages, add_generation_prompt=True))


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # keep JAX's backend probing out of the transcript
  from gtalign.models.checkpoints import load_pretrained
  from gtalign.sampling.decode import generate

  start = time.perf_counter()
  config, params, tokenizer = load_pretrained(_MODEL.value, dtype=_DTYPE.value)
  if tokenizer is None:
    raise app.UsageError(f"{_MODEL.value} has no tokenizer files; cannot encode a prompt")
  load_seconds = time.perf_counter() - start
  ids = chat_prompt_ids(tokenizer, _PROMPT.value, _SYSTEM.value)
  gen = generate(config, params, [ids], eos_ids=tokenizer.eos_ids, pad_id=tokenizer.pad_id,
                 max_new_tokens=_MAX_NEW_TOKENS.value, temperature=_TEMPERATURE.value,
                 seed=_SEED.value)
  print(tokenizer.decode(gen.tokens[0]))
  rate = gen.num_generated / max(gen.decode_seconds, 1e-9)
  print(f"[load {load_seconds:.1f}s | prompt {len(ids)} tokens, prefill {gen.prefill_seconds:.2f}s "
        f"(incl. compile) | {gen.num_generated} new tokens, {rate:.1f} tok/s | "
        f"finish: {gen.finish_reasons[0]}]", file=sys.stderr)


if __name__ == "__main__":
  app.run(main)
