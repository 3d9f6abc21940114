"""Serving under load: `gtalign.serve` on loopback, concurrent clients against one at a time.

    python bench/serve.py [--requests=64] [--clients=16] [--max_tokens=64] [--dtype=bfloat16]

Starts the server as its own process on SmolLM2-135M-Instruct, then sends the same seeded
requests (the chat prompts of `bench/grpo_iteration.py`, temperature 1) twice: from `--clients`
concurrent clients, and one at a time. Seeded requests draw the same random numbers either way,
so both passes generate nearly the same text. Each pass runs once untimed first so that every program it
needs is compiled. Reports requests/s, generated tokens/s (from `usage`), p50/p99 latency,
the batches the server formed, and CPU time other processes took meanwhile.

Then the steering metric through the server (`gtalign.evaluation.steering`, over raw HTTP):
for each of `--steering_questions` definite and vague questions, a greedy game request gives
the policy's own table; three more requests replace it (`gtalign.payoff`) with a table that
selects each strategy of the question's row in turn, and the reply's key and response are
checked against the pick. A policy that ignores its table scores about 1/3; one that writes no
table, 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time

import httpx
import numpy as np

from common import OtherLoad, prompts as bench_prompts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_server(args) -> tuple[subprocess.Popen, str, str]:
  log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
  proc = subprocess.Popen(
      [sys.executable, "-m", "gtalign.serve", f"--model={args.model}", f"--dtype={args.dtype}",
       "--port=0", f"--max_rows={args.clients}", f"--max_queue={args.requests}"],
      cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
  deadline = time.time() + 600
  while time.time() < deadline:
    found = re.search(r"on (http://[\d.]+:\d+/v1)", open(log.name).read())
    if found:
      return proc, found.group(1), log.name
    if proc.poll() is not None:
      break
    time.sleep(0.5)
  proc.kill()
  raise RuntimeError(f"the server did not start: {open(log.name).read()[-2000:]}")


async def run_pass(base_url: str, bodies: list[dict], clients: int) -> dict:
  """Sends every body, `clients` at a time; per-request latency and generated tokens."""
  queue: asyncio.Queue = asyncio.Queue()
  for body in bodies:
    queue.put_nowait(body)
  latencies, tokens = [], []

  async def client(http: httpx.AsyncClient):
    while not queue.empty():
      body = queue.get_nowait()
      start = time.perf_counter()
      r = await http.post(f"{base_url}/chat/completions", json=body)
      r.raise_for_status()
      latencies.append(time.perf_counter() - start)
      tokens.append(r.json()["usage"]["completion_tokens"])

  start = time.perf_counter()
  async with httpx.AsyncClient(timeout=600) as http:
    await asyncio.gather(*[client(http) for _ in range(clients)])
  seconds = time.perf_counter() - start
  return dict(seconds=seconds, requests_s=len(bodies) / seconds, tokens_s=sum(tokens) / seconds,
              tokens=sum(tokens), p50=float(np.percentile(latencies, 50)),
              p99=float(np.percentile(latencies, 99)))


async def steer_over_http(base_url: str, model: str, count: int) -> str:
  """The steering line: edited tables followed, over the server's game extension."""
  from gtalign.evaluation.cuts import QUESTIONS
  from gtalign.evaluation.steering import table_for
  from gtalign.game import payoff

  asked = list(QUESTIONS[:count])

  async def game(http, question, table=None):
    body = {"model": model, "temperature": 0, "seed": 0, "max_tokens": 256,
            "messages": [{"role": "user", "content": question}],
            "gtalign": {"game": True, **({"payoff": table.to_dict()} if table else {})}}
    reply = (await http.post(f"{base_url}/chat/completions", json=body)).json()
    return reply["gtalign"]["choices"][0]

  async with httpx.AsyncClient(timeout=900) as http:
    own = await asyncio.gather(*[game(http, q) for q in asked])
    # each edit prices one strategy in both rows (steering.table_for)
    cases = [(q, a, table_for(
        payoff.Bimatrix.from_dict(o["pricing"]["payoff_written"]) if o["pricing"] and
        o["pricing"]["payoff_written"] else None, a))
             for q, o in zip(asked, own) if o["pricing"] is not None
             for a in payoff.ACTIONS]
    steered = await asyncio.gather(*[game(http, q, t) for q, _, t in cases])
  key_ok = [bool(c["chosen_key"]) and payoff.action(c["chosen_key"]) == a
            for (_, a, _), c in zip(cases, steered)]
  act_ok = [c["action"] == a for (_, a, _), c in zip(cases, steered)]
  keys, acts, both = sum(key_ok), sum(act_ok), sum(k and r for k, r in zip(key_ok, act_ok))
  total = 3 * len(asked)
  return (f"steering through the server: {both}/{total} edited tables followed = "
          f"{both / total:.2f} (key {keys}/{total}, response {acts}/{total}; "
          f"{len(asked) - len(cases) // 3} of {len(asked)} questions had no table to edit)")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="smollm2-135m-instruct")
  parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
  parser.add_argument("--requests", type=int, default=64)
  parser.add_argument("--clients", type=int, default=16)
  parser.add_argument("--max_tokens", type=int, default=64)
  parser.add_argument("--steering_questions", type=int, default=12)
  args = parser.parse_args()

  questions = bench_prompts()
  bodies = [{"model": args.model, "max_tokens": args.max_tokens, "temperature": 1.0, "seed": i,
             "messages": [{"role": "user", "content": questions[i % len(questions)]}]}
            for i in range(args.requests)]
  proc, base_url, log = start_server(args)
  root = base_url[:-len("/v1")]
  try:
    print(f"{args.model} {args.dtype}, {args.requests} requests, max_tokens {args.max_tokens}, "
          f"temperature 1, {os.cpu_count()} CPUs, server at {base_url}", flush=True)
    print(f"{'clients':>8} {'s':>7} {'req/s':>7} {'tok/s':>7} {'p50 s':>7} {'p99 s':>7} "
          f"{'batches':>8}")
    results = {}
    for clients in (args.clients, 1):
      asyncio.run(run_pass(base_url, bodies, clients))  # untimed: compiles what it needs
      before = httpx.get(f"{root}/health").json()["batches"]
      load = OtherLoad(ours=(proc.pid,)).start()
      r = asyncio.run(run_pass(base_url, bodies, clients))
      other = load.stop()
      r["batches"] = httpx.get(f"{root}/health").json()["batches"] - before
      results[clients] = r
      flag = "  (noisy: other processes used the CPU)" if other > 0.05 * r["seconds"] else ""
      print(f"{clients:>8} {r['seconds']:>7.1f} {r['requests_s']:>7.2f} {r['tokens_s']:>7.1f} "
            f"{r['p50']:>7.2f} {r['p99']:>7.2f} {r['batches']:>8}   other processes "
            f"{other:.1f} CPU s{flag}", flush=True)
    many, one = results[args.clients], results[1]
    print(f"{args.clients} concurrent clients: {many['tokens_s'] / one['tokens_s']:.2f}x the "
          f"generated tokens/s of one at a time ({many['tokens']} and {one['tokens']} tokens: "
          f"a seeded request draws the same numbers in any batch, but other batch shapes round "
          f"the logits differently, which can move a draw across a token boundary)")
    if args.steering_questions:
      print(asyncio.run(steer_over_http(base_url, args.model, args.steering_questions)),
            flush=True)
  finally:
    proc.terminate()
    proc.wait(timeout=30)
    os.unlink(log)


if __name__ == "__main__":
  main()
