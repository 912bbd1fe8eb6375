"""`teacher_concurrency`: the OpenAI-compatible teacher against a loopback server that answers every chat
completion in 200 ms (as a remote model would, without using our CPU), 8 requests in flight against one
at a time, same 32 prompts, no cache. Median of 3 runs each; ratio = throughput(8) / throughput(1), goal
at least 6 (8 is the ceiling).

Run alone: `python -m benchmarks.run teacher_concurrency` (or `python -m benchmarks.teacher_bench`).
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pipeline_config.schema import TeacherConfig
from tasks.common.teacher.remote import RemoteTeacher


def _server(latency_s: float) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as vLLM and the OpenAI API serve
        # buffered: headers and body leave in one send (two small sends meet delayed ACK: +40 ms each)
        wbufsize = -1

        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            time.sleep(latency_s)
            prompt = body["messages"][0]["content"]
            reply = {
                "choices": [{"index": 0, "message": {"role": "assistant", "content": f"echo {prompt}"}}],
                "usage": {"prompt_tokens": 8, "completion_tokens": 4, "total_tokens": 12},
            }
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def teacher_concurrency(
    prompts: int = 32, in_flight: int = 8, latency_s: float = 0.2, repeats: int = 3
) -> dict:
    server = _server(latency_s)
    url = f"http://127.0.0.1:{server.server_port}/v1"
    texts = [f"write task {i}" for i in range(prompts)]

    def throughput(concurrency: int) -> float:
        cfg = TeacherConfig(backend="openai", model="bench", base_url=url, max_concurrency=concurrency)
        teacher = RemoteTeacher(cfg)  # no cache: every prompt is a request
        try:
            start = time.perf_counter()
            out = teacher.generate(texts)
            seconds = time.perf_counter() - start
        finally:
            teacher.close()
        if None in out or teacher.stats()["requests"] != prompts:
            raise RuntimeError(f"benchmark run incomplete: {teacher.stats()}")
        return prompts / seconds

    try:
        throughput(in_flight)  # warm-up: imports, first connections
        runs: dict[str, list[float]] = {"parallel": [], "serial": []}
        for _ in range(repeats):
            runs["parallel"].append(throughput(in_flight))
            runs["serial"].append(throughput(1))
    finally:
        server.shutdown()
        server.server_close()
    parallel, serial = statistics.median(runs["parallel"]), statistics.median(runs["serial"])
    return {
        "value": round(parallel, 2),
        "unit": "requests/s",
        "ratio": round(parallel / serial, 2),
        "detail": {
            "one_at_a_time_requests_per_s": round(serial, 2),
            "in_flight": in_flight,
            "prompts": prompts,
            "server_latency_s": latency_s,
            "repeats": repeats,
            "ceiling_requests_per_s": round(in_flight / latency_s, 1),
            "ratio_means": f"{in_flight} in flight / one at a time, requests/s (higher is better; goal >= 6)",
        },
    }


if __name__ == "__main__":
    print(json.dumps(teacher_concurrency(), indent=2))
