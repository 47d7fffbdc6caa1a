"""The LLM judge matcher against a local server on 127.0.0.1 that speaks the chat protocol."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from medvl.eval.judge import SYSTEM, JudgeError, JudgeMatcher, local_chat, openai_chat
from medvl.eval.reasoning import score_reasoning


def _steps(block: str) -> list[str]:
    return [re.sub(r"^\d+\.\s*", "", line) for line in block.strip().splitlines()]


def _same(a: str, b: str) -> bool:
    """The stub judge's rule: the same words once labels and case are set aside."""

    def key(s: str) -> str:
        return " ".join(re.findall(r"[a-z0-9]+", re.sub(r"^\w+:\s*", "", s).lower()))

    return key(a) == key(b)


class StubJudge(BaseHTTPRequestHandler):
    """``POST /v1/chat/completions``: matches steps by `_same`; the server's ``mode`` makes it
    fail on purpose (``error``: HTTP 500, ``prose``: a reply without JSON)."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"path": self.path, "body": body,
                                     "auth": self.headers.get("Authorization")})  # fmt: skip
        if self.server.mode == "error":
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"overloaded")
            return
        user = body["messages"][-1]["content"]
        gen, ref = user.split("Reference steps:")
        gen, ref = _steps(gen.replace("Generated steps:", "")), _steps(ref)
        pairs = [[i + 1, j + 1] for i, g in enumerate(gen) for j, r in enumerate(ref)
                 if _same(g, r)]  # fmt: skip
        content = ("I think they differ." if self.server.mode == "prose"
                   else f"```json\n{json.dumps({'matches': pairs})}\n```")  # fmt: skip
        reply = {"choices": [{"message": {"role": "assistant", "content": content}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), StubJudge)
    srv.requests, srv.mode = [], "ok"
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _url(srv: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/v1"


REFERENCE = ["Modality: chest X-ray.", "Observation: a nodule in the right upper zone.",
             "Conclusion: yes."]  # fmt: skip


def test_judge_scores_a_reasoning_through_the_endpoint(server, monkeypatch):
    monkeypatch.setenv("MEDVL_JUDGE_BASE_URL", _url(server))
    monkeypatch.setenv("MEDVL_JUDGE_MODEL", "stub-judge")
    monkeypatch.setenv("MEDVL_JUDGE_API_KEY", "sekret")
    judge = JudgeMatcher()
    reasoning = "Chest X-ray.\nSomething else.\nA nodule in the right upper zone.\nyes"
    s = score_reasoning(reasoning, REFERENCE, judge, answer="yes", answer_type="closed")
    assert (s.matched, s.recall, s.precision, s.order) == (3, 1.0, 0.75, 1.0)
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer sekret"
    assert request["body"]["model"] == "stub-judge" and request["body"]["temperature"] == 0
    # The same lists again come from the cache: no second request.
    score_reasoning(reasoning, REFERENCE, judge)
    assert len(server.requests) == 1


def test_judge_errors_name_the_problem(server, monkeypatch):
    monkeypatch.delenv("MEDVL_JUDGE_BASE_URL", raising=False)
    monkeypatch.delenv("MEDVL_JUDGE_MODEL", raising=False)
    with pytest.raises(JudgeError, match="MEDVL_JUDGE_BASE_URL"):
        JudgeMatcher()
    server.mode = "prose"
    judge = JudgeMatcher(openai_chat(_url(server), "stub"))
    with pytest.raises(JudgeError, match="I think they differ"):
        judge.similarity(["a"], ["b"])
    server.mode = "error"
    judge = JudgeMatcher(openai_chat(_url(server), "stub", retries=1))
    with pytest.raises(JudgeError, match="HTTP 500: overloaded"):
        judge.similarity(["a"], ["b"])
    assert len(server.requests) == 3  # the prose reply, then the 500 and its one retry
    port = server.server_address[1]
    server.shutdown()
    server.server_close()
    judge = JudgeMatcher(openai_chat(f"http://127.0.0.1:{port}/v1", "stub", retries=0))
    with pytest.raises(JudgeError, match="unreachable"):
        judge.similarity(["a"], ["b"])


def test_a_local_model_judges_in_process(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDVL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(JudgeError, match="cannot load the judge model .*nowhere"):
        local_chat(tmp_path / "nowhere")
    complete = local_chat("tiny:qwen2_5_vl-tiny", max_new_tokens=12)
    reply = complete(SYSTEM, "Generated steps:\n1. a nodule\nReference steps:\n1. a nodule")
    assert isinstance(reply, str) and reply == complete(SYSTEM, "Generated steps:\n1. a nodule"
                                                        "\nReference steps:\n1. a nodule")
    # A random-init model writes no JSON: the matcher says so, quoting the reply.
    with pytest.raises(JudgeError, match="is not \\{\"matches\""):
        JudgeMatcher(complete).similarity(["a nodule"], ["a nodule"])


def test_judge_model_needs_the_judge_matcher():
    from medvl.eval.eval_config import EvalConfig

    with pytest.raises(ValueError, match="judge_model is used by reasoning_matcher: judge"):
        EvalConfig(model="m", manifest="x.jsonl", judge_model="/models/judge")
    assert EvalConfig(model="m", manifest="x.jsonl", reasoning_matcher="judge",
                      judge_model="/models/judge").judge_model == "/models/judge"  # fmt: skip
