"""A scriptable OpenAI-compatible judge server for tests (standard library only).

Run `python tests/judge_server.py`; it binds 127.0.0.1 on a free port and prints the port. The
test scripts it with POST /control (JSON, resets the counters):
  reply: message content to return (default "thought: ok \\boxed{1}")
  delay: seconds to sleep before each reply
  fail_first: answer HTTP `fail_status` (default 500) to the first K requests
  fail_status: status used by fail_first; with fail_first < 0 every request fails
  slow_first / slow_s: the first K requests sleep slow_s seconds (to trip client timeouts)
  fault_rate / faults / seed: each request is faulted with probability fault_rate (drawn from
    Random(seed, request number), so a run is repeatable); the k-th faulted request gets
    faults[k % len(faults)], one of FAULTS below (default: all of them, in that order)
  hang_s: how long "timeout" sleeps before replying and "hang" holds the connection silent
GET /stats returns {requests, max_in_flight, statuses, last_body, faults (kind -> count),
log ([{n, content, fault}] per request: the prompt and the fault it got, or null)}.
"""

import json
import random
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# 5xx, a reply after the client's timeout, a body that is not JSON, an empty message, a
# connection held open with no reply, a connection closed with no reply
FAULTS = ("status_500", "timeout", "malformed_json", "empty_content", "hang", "drop")
_LOCK = threading.Lock()
_CONTROL = {}
_STATS = {}


def _reset(control):
  _CONTROL.clear()
  _CONTROL.update(control)
  _STATS.clear()
  _STATS.update(requests=0, in_flight=0, max_in_flight=0, statuses={}, last_body=None,
                faults={}, log=[])


def _fault_for(n, control):
  """The fault request n gets (None: a normal reply); call with _LOCK held."""
  rate = control.get("fault_rate", 0)
  if not rate or random.Random(f"{control.get('seed', 0)}:{n}").random() >= rate:
    return None
  kinds = control.get("faults") or FAULTS
  kind = kinds[sum(_STATS["faults"].values()) % len(kinds)]
  _STATS["faults"][kind] = _STATS["faults"].get(kind, 0) + 1
  return kind


class Handler(BaseHTTPRequestHandler):
  protocol_version = "HTTP/1.1"  # keep-alive, like a real server

  def log_message(self, *args):  # quiet
    pass

  def _send(self, status, payload):
    data = json.dumps(payload).encode()
    try:
      self.send_response(status)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(data)))
      self.end_headers()
      self.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
      pass

  def _body(self):
    return json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")

  def do_GET(self):
    if self.path == "/stats":
      with _LOCK:
        self._send(200, dict(_STATS))
    else:
      self._send(404, {"error": "not found"})

  def do_POST(self):
    body = self._body()
    if self.path == "/control":
      with _LOCK:
        _reset(body)
      self._send(200, {"ok": True})
      return
    if not self.path.endswith("/chat/completions"):
      self._send(404, {"error": "not found"})
      return
    with _LOCK:
      _STATS["requests"] += 1
      n = _STATS["requests"]
      _STATS["in_flight"] += 1
      _STATS["max_in_flight"] = max(_STATS["max_in_flight"], _STATS["in_flight"])
      _STATS["last_body"] = body
      control = dict(_CONTROL)
      fault = _fault_for(n, control)
      messages = body.get("messages") or [{}]
      _STATS["log"].append({"n": n, "content": messages[-1].get("content"), "fault": fault})
    try:
      if fault is not None:
        self._fault(fault, n, control.get("hang_s", 5.0))
        return
      time.sleep(control.get("delay", 0))
      if n <= control.get("slow_first", 0):
        time.sleep(control.get("slow_s", 0.3))
      fail_first = control.get("fail_first", 0)
      status = control.get("fail_status", 500) if (fail_first < 0 or n <= fail_first) else 200
      with _LOCK:
        key = str(status)
        _STATS["statuses"][key] = _STATS["statuses"].get(key, 0) + 1
      if status != 200:
        self._send(status, {"error": f"scripted {status}"})
        return
      reply = control.get("reply", "thought: ok \\boxed{1}")
      self._send(200, {"id": f"cmpl-{n}", "object": "chat.completion", "model": body.get("model"),
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": reply}}]})
    finally:
      with _LOCK:
        _STATS["in_flight"] -= 1


  def _fault(self, kind, n, hang_s):
    reply = lambda content: {"id": f"cmpl-{n}", "object": "chat.completion", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant",
                                                          "content": content}}]}
    if kind == "status_500":
      self._send(500, {"error": "injected fault"})
    elif kind == "timeout":
      time.sleep(hang_s)
      self._send(200, reply("thought: late \\boxed{1}"))
    elif kind == "malformed_json":
      data = b'{"choices": [{"message": {"content": "thought: ok'
      self.send_response(200)
      self.send_header("Content-Type", "application/json")
      self.send_header("Content-Length", str(len(data)))
      self.end_headers()
      self.wfile.write(data)
    elif kind == "empty_content":
      self._send(200, reply(""))
    elif kind == "hang":  # read the request, then say nothing; the client must time out
      time.sleep(hang_s)
      self.close_connection = True
    elif kind == "drop":
      self.close_connection = True
      self.connection.shutdown(2)
    else:
      raise ValueError(f"unknown fault {kind!r}; expected one of {FAULTS}")


def main():
  _reset({})
  ThreadingHTTPServer.request_queue_size = 256  # socketserver's 5 drops bursts of connects
  server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
  server.daemon_threads = True
  print(server.server_address[1], flush=True)
  server.serve_forever()


if __name__ == "__main__":
  sys.exit(main())
