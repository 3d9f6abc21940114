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

from gtalign.game import trace, turn
from gtalign.serving import game, protocol
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
  except RecursionError:
    raise RequestError(None, "the request body is nested too deeply") from None


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
               retry_after_s: int = 1, game_settings: dict | None = None):
    self.engine, self.tokenizer, self.model_name = engine, tokenizer, model_name
    self.game_settings = game_settings or {"prompt_style": "full", "system": None}
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

  def _budget(self, req: protocol.ChatRequest, used: int) -> int:
    """The request's max_tokens, checked against the context after `used` prompt tokens."""
    room = self.context - used
    if room < 1:
      raise RequestError("messages", f"the prompt has {used} tokens; the context holds "
                                     f"{self.context}")
    max_tokens = req.max_tokens if req.max_tokens is not None else min(
        self.default_max_tokens, room)
    if max_tokens > room:
      raise RequestError("max_tokens", f"max_tokens={max_tokens} plus the prompt's {used} "
                                       f"tokens is over the context of {self.context}")
    return max_tokens

  def _new_job(self, ids: list[int], req: protocol.ChatRequest, n: int, max_tokens: int,
               stop: tuple[str, ...], seed: int, resume=None) -> Job:
    return Job(prompt_ids=ids, n=n, max_tokens=max_tokens, temperature=req.temperature,
               top_p=req.top_p, stop=stop, seed=seed % (2 ** 31), resume=resume,
               loop=asyncio.get_running_loop())

  def _job(self, req: protocol.ChatRequest) -> Job:
    messages = [{"role": r, "content": c} for r, c in req.messages]
    try:
      text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    except Exception as e:  # the model's template rejects this conversation (roles, order)
      raise RequestError("messages", f"messages: the chat template refused them: {e}") from None
    ids = self.tokenizer.encode(text)
    seed = req.seed if req.seed is not None else random_seed()
    return self._new_job(ids, req, req.n, self._budget(req, len(ids)), req.stop, seed)

  @staticmethod
  def _busy_response(e: QueueFull, retry_after_s: int) -> JSONResponse:
    return _error(RequestError(None, f"the server is busy: {e}; retry after {retry_after_s} s",
                               status=429, kind="rate_limit_error"),
                  headers={"Retry-After": str(retry_after_s)})

  async def chat(self, request: Request):
    try:
      req = protocol.parse_chat_request(await _read_json(request, self.max_body_bytes))
      options = game.parse_options(req.game) if req.game is not None else None
      if options is not None:
        if req.stream:
          raise RequestError("stream", "a gtalign game request cannot be streamed yet")
        return await self._game(request, req, options)
      job = self._job(req)
      self.engine.submit(job)
    except RequestError as e:
      return _error(e)
    except QueueFull as e:
      return self._busy_response(e, self.retry_after_s)
    cid = protocol.completion_id()
    if req.stream:
      return StreamingResponse(self._stream(job, req, cid), media_type="text/event-stream")
    result = await self._collect(request, job)
    if not isinstance(result, dict):
      return result
    choices = [{"index": i, "message": {"role": "assistant", "content": result["texts"][i]},
                "finish_reason": protocol.finish_reason(result["reasons"][i]),
                "logprobs": None} for i in range(job.n)]
    return JSONResponse(protocol.chat_completion(cid, self.model_name, choices,
                                                 result["prompt_tokens"],
                                                 sum(result["counts"])))

  async def _game(self, request: Request, req: protocol.ChatRequest,
                  options: game.GameOptions):
    """Phase 1 up to </payoff> (unless the given trace has it), the table edited, phase 2 to
    the end of the response from phase 1's own ids (`gtalign.game.turn`); each phase's rows
    share engine batches with everyone else's."""
    text_prompt, prefix = game.prompt_and_prefix(req, options, self.tokenizer,
                                                 self.game_settings)
    ids = self.tokenizer.encode(text_prompt)
    plan = self.engine.sampler.plan([prefix])[0] if prefix else None
    max_tokens = self._budget(req, len(ids) + len(plan.ids if plan else ()))
    seed = req.seed if req.seed is not None else random_seed()
    texts, used, reasons = [prefix] * req.n, [0] * req.n, [None] * req.n
    own: list[list[int] | None] = [None] * req.n  # each row's completion ids so far
    if trace.PAYOFF_END not in prefix:
      job = self._new_job(ids, req, req.n, max_tokens, (trace.PAYOFF_END,), seed, resume=plan)
      self.engine.submit(job)
      first = await self._collect(request, job)
      if not isinstance(first, dict):
        return first
      for j in range(req.n):
        stopped = first["reasons"][j] == "stop"
        texts[j] = prefix + first["texts"][j] + (trace.PAYOFF_END if stopped else "")
        used[j] = first["counts"][j]
        own[j] = first["tokens"][j]
        reasons[j] = None if stopped else first["reasons"][j]
    infos, second = [None] * req.n, {}
    for j in range(req.n):
      if reasons[j] is not None:
        continue
      texts[j], infos[j] = turn.edit_table(texts[j], options.edit)
      resume = self.engine.sampler.plan([texts[j]], [own[j]])[0]
      if own[j] is not None:  # generated ids kept (one crossing </payoff> is spelled again)
        used[j] = max(0, len(resume.ids) - len(plan.ids if plan else ()))
      budget = min(max_tokens - used[j], self.context - len(ids) - len(resume.ids))
      if budget < 1:
        reasons[j] = "length"
        continue
      second[j] = self._new_job(ids, req, 1, budget, (trace.RESPONSE_END,), seed + 1 + j,
                                resume=resume)
      self.engine.submit(second[j], force=True)
    for j, job in second.items():  # all submitted already: they decode together
      result = await self._collect(request, job)
      if not isinstance(result, dict):
        for other in second.values():
          other.cancelled.set()
        return result
      stopped = result["reasons"][0] == "stop"
      texts[j] += result["texts"][0] + (trace.RESPONSE_END if stopped else "")
      used[j] += result["counts"][0]
      reasons[j] = result["reasons"][0]
    traces = [{"index": j, **game.choice_trace(texts[j], infos[j], reasons[j])}
              for j in range(req.n)]
    choices = [{"index": j, "message": {"role": "assistant",
                                        "content": traces[j]["response"] or ""},
                "finish_reason": protocol.finish_reason(reasons[j]), "logprobs": None}
               for j in range(req.n)]
    return JSONResponse(protocol.chat_completion(
        protocol.completion_id(), self.model_name, choices, len(ids), sum(used),
        extra={"gtalign": {"prompt": text_prompt, "choices": traces}}))

  async def _collect(self, request: Request, job: Job):
    """{texts, reasons, counts, prompt_tokens} of a job, or the response to send instead
    (500 on a failed batch; when the client went away, its rows are cancelled)."""
    texts, reasons, counts = [""] * job.n, ["length"] * job.n, [0] * job.n
    tokens: list[list[int]] = [[] for _ in range(job.n)]
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
          reasons[payload[0]], counts[payload[0]], tokens[payload[0]] = payload[1:]
        elif kind == "error":
          return JSONResponse({"error": {"message": payload, "type": "server_error",
                                         "param": None, "code": None}}, status_code=500)
        elif kind == "done":
          return {"texts": texts, "reasons": reasons, "counts": counts, "tokens": tokens,
                  "prompt_tokens": payload["prompt_tokens"]}
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
