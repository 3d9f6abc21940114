"""The ASGI app: `/v1/chat/completions` (plain and streamed), `/v1/models`, `/health`.

Starlette, not FastAPI: the API is three routes whose requests are validated by
`serving.protocol` (one-sentence errors naming the field), so FastAPI's pydantic layer would only
add a second, differently worded validator; uvicorn runs it.
"""

from __future__ import annotations

import asyncio
import json
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from gtalign.serving import protocol
from gtalign.serving.engine import Engine, Job, QueueFull, random_seed
from gtalign.serving.protocol import RequestError


def _error(e: RequestError, headers: dict | None = None) -> JSONResponse:
  return JSONResponse(e.body(), status_code=e.status, headers=headers)


async def _read_json(request: Request, max_bytes: int):
  declared = request.headers.get("content-length")
  if declared is not None and declared.isdigit() and int(declared) > max_bytes:
    raise RequestError(None, f"the request body has {declared} bytes; the server takes at "
                             f"most {max_bytes}")
  body = bytearray()
  async for part in request.stream():
    body += part
    if len(body) > max_bytes:
      raise RequestError(None, f"the request body is over {max_bytes} bytes")
  try:
    return json.loads(body)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise RequestError(None, f"the request body is not valid JSON: {e}") from None


async def _disconnected(request: Request) -> None:
  """Returns when the client goes away (the body has been read already)."""
  while True:
    message = await request.receive()
    if message["type"] == "http.disconnect":
      return


class Server:
  """Holds the engine, the tokenizer and the limits; `app` is the ASGI application."""

  def __init__(self, engine: Engine, tokenizer, model_name: str, context: int,
               default_max_tokens: int = 256, max_body_bytes: int = 1 << 20,
               retry_after_s: int = 1):
    self.engine, self.tokenizer, self.model_name = engine, tokenizer, model_name
    self.context, self.default_max_tokens = context, default_max_tokens
    self.max_body_bytes, self.retry_after_s = max_body_bytes, retry_after_s
    self.started = time.time()
    self.app = Starlette(routes=[
        Route("/health", self.health, methods=["GET"]),
        Route("/v1/models", self.models, methods=["GET"]),
        Route("/v1/chat/completions", self.chat, methods=["POST"]),
    ])

  async def health(self, request: Request) -> JSONResponse:
    e = self.engine
    return JSONResponse({"status": "ok", "queued": e.queued, "active_rows": e.active_rows,
                         "batches": e.batches, "rows": e.rows_served,
                         "rows_cancelled": e.rows_cancelled,
                         "last_batch_steps": e.last_batch_steps})

  async def models(self, request: Request) -> JSONResponse:
    return JSONResponse({"object": "list", "data": [
        {"id": self.model_name, "object": "model", "created": int(self.started),
         "owned_by": "gtalign"}]})

  def _job(self, req: protocol.ChatRequest) -> Job:
    messages = [{"role": r, "content": c} for r, c in req.messages]
    ids = self.tokenizer.encode(self.tokenizer.apply_chat_template(
        messages, add_generation_prompt=True))
    room = self.context - len(ids)
    if room < 1:
      raise RequestError("messages", f"the prompt has {len(ids)} tokens; the context holds "
                                     f"{self.context}")
    max_tokens = req.max_tokens if req.max_tokens is not None else min(
        self.default_max_tokens, room)
    if max_tokens > room:
      raise RequestError("max_tokens", f"max_tokens={max_tokens} plus the prompt's {len(ids)} "
                                       f"tokens is over the context of {self.context}")
    seed = req.seed if req.seed is not None else random_seed()
    return Job(prompt_ids=ids, n=req.n, max_tokens=max_tokens, temperature=req.temperature,
               top_p=req.top_p, stop=req.stop, seed=seed % (2 ** 31),
               loop=asyncio.get_running_loop())

  async def chat(self, request: Request):
    try:
      req = protocol.parse_chat_request(await _read_json(request, self.max_body_bytes))
      if req.game is not None:
        raise RequestError("gtalign", "the gtalign game extension is not served yet")
      job = self._job(req)
      self.engine.submit(job)
    except RequestError as e:
      return _error(e)
    except QueueFull as e:
      return _error(RequestError(None, f"the server is busy: {e}; retry after "
                                       f"{self.retry_after_s} s", status=429,
                                 kind="rate_limit_error"),
                    headers={"Retry-After": str(self.retry_after_s)})
    cid = protocol.completion_id()
    if req.stream:
      return StreamingResponse(self._stream(job, req, cid), media_type="text/event-stream")
    return await self._complete(request, job, cid)

  async def _complete(self, request: Request, job: Job, cid: str):
    texts, reasons, counts = [""] * job.n, [None] * job.n, [0] * job.n
    gone = asyncio.ensure_future(_disconnected(request))
    try:
      while True:
        getter = asyncio.ensure_future(job.events.get())
        done, _ = await asyncio.wait({getter, gone}, return_when=asyncio.FIRST_COMPLETED)
        if gone in done:
          getter.cancel()
          job.cancelled.set()
          return JSONResponse({}, status_code=499)
        kind, payload = getter.result()
        if kind == "delta":
          texts[payload[0]] += payload[1]
        elif kind == "finish":
          reasons[payload[0]], counts[payload[0]] = payload[1], payload[2]
        elif kind == "error":
          return JSONResponse({"error": {"message": payload, "type": "server_error",
                                         "param": None, "code": None}}, status_code=500)
        elif kind == "done":
          choices = [{"index": i, "message": {"role": "assistant", "content": texts[i]},
                      "finish_reason": protocol.finish_reason(reasons[i] or "length"),
                      "logprobs": None} for i in range(job.n)]
          return JSONResponse(protocol.chat_completion(
              cid, self.model_name, choices, payload["prompt_tokens"], sum(counts)))
    finally:
      gone.cancel()

  async def _stream(self, job: Job, req: protocol.ChatRequest, cid: str):
    def event(body: dict) -> str:
      return f"data: {json.dumps(body)}\n\n"

    counts = [0] * job.n
    try:
      for i in range(job.n):
        yield event(protocol.chunk(cid, self.model_name, i, {"role": "assistant",
                                                            "content": ""}, None))
      while True:
        kind, payload = await job.events.get()
        if kind == "delta":
          yield event(protocol.chunk(cid, self.model_name, payload[0],
                                     {"content": payload[1]}, None))
        elif kind == "finish":
          counts[payload[0]] = payload[2]
          yield event(protocol.chunk(cid, self.model_name, payload[0], {},
                                     protocol.finish_reason(payload[1])))
        elif kind == "error":
          yield event({"error": {"message": payload, "type": "server_error", "param": None,
                                 "code": None}})
          break
        elif kind == "done":
          if req.include_usage:
            usage = {"prompt_tokens": payload["prompt_tokens"], "completion_tokens": sum(counts),
                     "total_tokens": payload["prompt_tokens"] + sum(counts)}
            yield event({"id": cid, "object": "chat.completion.chunk",
                         "created": int(time.time()), "model": self.model_name,
                         "choices": [], "usage": usage})
          break
      yield "data: [DONE]\n\n"
    finally:  # the client went away (the generator is closed) or the stream ended
      job.cancelled.set()
