"""Running a batch of HTTP requests (an asyncio coroutine) from synchronous code."""

from __future__ import annotations

import asyncio
import concurrent.futures


def run(coro):
  """`asyncio.run(coro)`, or on a thread of its own when called inside a running event loop
  (a notebook, an async server), where `asyncio.run` refuses."""
  try:
    asyncio.get_running_loop()
  except RuntimeError:
    return asyncio.run(coro)
  with concurrent.futures.ThreadPoolExecutor(1) as ex:
    return ex.submit(asyncio.run, coro).result()
