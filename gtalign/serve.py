"""Serve a model over the OpenAI chat-completions API:
`python -m gtalign.serve --model=smollm2-135m-instruct [--host=127.0.0.1 --port=8000]`.

Concurrent requests share sampler batches (`gtalign.serving.engine`); the routes and their
errors are `gtalign.serving.app`. Any OpenAI client works against `http://HOST:PORT/v1`.
"""

from __future__ import annotations

import sys
import time

from absl import app, flags, logging

from gtalign.utils import cli

_MODEL = flags.DEFINE_string("model", "smollm2-135m-instruct",
                             "Known model name, Hugging Face model directory or .gguf file.")
_ADAPTER = flags.DEFINE_string(
    "adapter", None, "A LoRA adapter directory in PEFT format (a run's export/adapter) to serve "
    "on --model, merged into its weights at start-up.")
_NAME = flags.DEFINE_string("served_name", None, "Model id in /v1/models (default: --model).")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Address to listen on.")
_PORT = flags.DEFINE_integer("port", 8000, "Port to listen on (0: any free port).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                           "Parameter and compute dtype.")
_MAX_ROWS = flags.DEFINE_integer("max_rows", 16, "Rows (requests x n) decoded together at most.",
                                 lower_bound=1)
_MAX_QUEUE = flags.DEFINE_integer("max_queue", 64,
                                  "Requests waiting at most; beyond it the server answers 429.",
                                  lower_bound=1)
_CHUNK = flags.DEFINE_integer("chunk_steps", 16,
                              "Decode steps between streamed chunks and cancellation checks.",
                              lower_bound=1)
_GATHER = flags.DEFINE_float("gather_ms", 5.0,
                             "After a request arrives, wait this long for others to batch with.")
_CONTEXT = flags.DEFINE_integer("context", 4096,
                                "Prompt plus max_tokens at most (capped by the model's own).")
_DEFAULT_MAX_TOKENS = flags.DEFINE_integer("default_max_tokens", 256,
                                           "max_tokens of a request that gives none.")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  import uvicorn

  from gtalign.models.checkpoints import load_pretrained
  from gtalign.sampling.sampler import Sampler
  from gtalign.serving.app import Server
  from gtalign.serving.engine import Engine
  from gtalign.training.export import settings_for_model

  start = time.perf_counter()
  config, params, tokenizer = load_pretrained(_MODEL.value, dtype=_DTYPE.value)
  if tokenizer is None:
    raise app.UsageError(f"{_MODEL.value} has no tokenizer files; a chat server needs one")
  if _ADAPTER.value:
    from gtalign.adapters import peft_format
    params = peft_format.load_onto(_ADAPTER.value, config, params)
  engine = Engine(Sampler(config, tokenizer), params, max_rows=_MAX_ROWS.value,
                  max_queue=_MAX_QUEUE.value, chunk_steps=_CHUNK.value,
                  gather_ms=_GATHER.value)
  server = Server(engine, tokenizer, _NAME.value or _MODEL.value,
                  context=min(_CONTEXT.value, config.max_position_embeddings),
                  default_max_tokens=_DEFAULT_MAX_TOKENS.value,
                  game_settings=settings_for_model(_ADAPTER.value or _MODEL.value))
  config_ = uvicorn.Config(server.app, host=_HOST.value, port=_PORT.value, log_level="warning")
  userver = uvicorn.Server(config_)
  # the port line is what scripts and tests wait for (with --port=0 it names the chosen port)
  original_startup = userver.startup

  async def startup(sockets=None):
    await original_startup(sockets=sockets)
    for s in userver.servers:
      for sock in s.sockets:
        host, port = sock.getsockname()[:2]
        print(f"serving {server.model_name} on http://{host}:{port}/v1 "
              f"(loaded in {time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)

  userver.startup = startup
  try:
    userver.run()
  finally:
    engine.close()


if __name__ == "__main__":
  cli.run(main)
