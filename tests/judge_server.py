"""A scriptable OpenAI-compatible judge server for tests (standard library only).

Run `python tests/judge_server.py`; it binds 127.0.0.1 on a free port and prints the port. The
test scripts it with POST /control (JSON, resets the counters):
  reply: message content to return (default "thought: ok \\boxed{1}")
  delay: seconds to sleep before each reply
  fail_first: answer HTTP `fail_status` (default 500) to the first K requests
  fail_status: status used by fail_first; with fail_first < 0 every request fails
  slow_first / slow_s: the first K requests sleep slow_s seconds (to trip client timeouts)
GET /stats returns {requests, max_in_flight, statuses, last_body}.
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_LOCK = threading.Lock()
_CONTROL = {}
_STATS = {}


def _reset(control):
  _CONTROL.clear()
  _CONTROL.update(control)
  _STATS.clear()
  _STATS.update(requests=0, in_flight=0, max_in_flight=0, statuses={}, last_body=None)


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
    try:
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


def main():
  _reset({})
  server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
  server.daemon_threads = True
  print(server.server_address[1], flush=True)
  server.serve_forever()


if __name__ == "__main__":
  sys.exit(main())
