"""The OpenAI-compatible teacher (tasks/common/teacher/remote.py) against the shared fake chat server
(tests/fake_chat.py) answering as a remote model would: slowly, without using our CPU.

Run alone: `python -m benchmarks.run teacher_concurrency`.
"""

from __future__ import annotations

import time

from benchmarks.registry import benchmark
from benchmarks.timing import Timed, time_runs, timed
from pipeline_config.schema import TeacherConfig
from tasks.common.teacher.remote import RemoteTeacher
from tests.fake_chat import Call, FakeChatServer, chat_reply

USAGE = {"prompt_tokens": 8, "completion_tokens": 4, "total_tokens": 12}


@benchmark("teacher_concurrency")
def teacher_concurrency(
    prompts: int = 32, in_flight: int = 8, latency_s: float = 0.2, repeats: int = 3
) -> dict:
    """Requests/s of the OpenAI teacher against a loopback server that answers every chat completion in
    200 ms, 8 requests in flight against one at a time, same 32 prompts, no cache; medians of 3 after a
    warm-up (imports, first connections). value: requests/s with 8 in flight; ratio = throughput(8) /
    throughput(1), goal at least 6 (8 is the ceiling)."""
    texts = [f"write task {i}" for i in range(prompts)]

    def respond(call: Call) -> dict:
        time.sleep(latency_s)
        return chat_reply(f"echo {call.prompt}", usage=USAGE)

    with FakeChatServer(respond) as server:

        def generate(concurrency: int) -> Timed:
            cfg = TeacherConfig(
                backend="openai", model="bench", base_url=server.url, max_concurrency=concurrency
            )
            teacher = RemoteTeacher(cfg)  # no cache: every prompt is a request
            try:
                run = timed(lambda: teacher.generate(texts))  # the requests alone, not set-up and close
            finally:
                teacher.close()
            if None in run.result or teacher.stats()["requests"] != prompts:
                raise RuntimeError(f"benchmark run incomplete: {teacher.stats()}")
            return run

        runs = time_runs({"parallel": lambda: generate(in_flight), "serial": lambda: generate(1)}, repeats)
    parallel, serial = prompts / runs["parallel"].median, prompts / runs["serial"].median
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
