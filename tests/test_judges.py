"""The four built-in judges, each against a construction whose verdicts are known, and their failures."""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

import dpo_plugin
from dpo_plugin.errors import ConfigError, UnknownNameError
from dpo_plugin.evaluation.judges.function import FunctionJudge
from dpo_plugin.evaluation.judges.llm import LLMJudge
from dpo_plugin.evaluation.judges.openai import OpenAIJudge, parse_reply
from dpo_plugin.evaluation.judges.reward_model import RewardModelJudge


def test_builtin_judges_are_registered():
    assert {"function", "reward_model", "llm", "openai"} <= set(dpo_plugin.judges())
    with pytest.raises(UnknownNameError, match="Did you mean 'openai'"):
        dpo_plugin.judges()["opnai"]


def prefer_shorter(prompt, a, b):
    return 0.5 if len(a) == len(b) else (0 if len(a) < len(b) else 1)


def test_function_judge_by_reference_and_object():
    judge = FunctionJudge("dpo_plugin.demo_data:judge_correct")
    prompts = ["What is 2 + 3?"] * 3
    assert judge(prompts, ["The answer is 5.", "5", "The answer is 6."], ["no", "The answer is 5.", "nope"]) == [0.0, 1.0, 0.5]
    assert FunctionJudge(prefer_shorter)(["q", "q"], ["ab", "abc"], ["abc", "ab"]) == [0.0, 1.0]


def test_function_judge_failures_are_reported_never_wins():
    def flaky(prompt, a, b):
        if a == "boom":
            raise RuntimeError("judge exploded")
        return {"x": "first", "y": 2, "z": True}.get(a, 0)

    judge = FunctionJudge(flaky)
    assert judge(["q"] * 4, ["boom", "x", "y", "z"], ["b"] * 4) == [None, None, None, None]
    assert "RuntimeError: judge exploded" in judge.errors[0] and "returned 'first'" in judge.errors[1]
    assert len(judge.errors) == 4


def test_function_judge_bad_reference():
    with pytest.raises(ConfigError, match="module:attribute"):
        FunctionJudge("no_colon_here")
    with pytest.raises(ConfigError, match="cannot be imported"):
        FunctionJudge("dpo_plugin.demo_data:nothing")
    with pytest.raises(ConfigError, match="needs judge_params"):
        FunctionJudge()


def _residual_only(model):
    """Zero every block's output projections: the last hidden state is the normalised embedding of the last token."""
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    return model


@pytest.fixture
def plain_tokenizer(tokenizer):
    """The tiny tokenizer without a chat template, so a scored text ends with the answer's last character."""
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    return plain


def test_reward_model_judge_prefers_answers_ending_in_A(plain_tokenizer):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(vocab_size=len(plain_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, num_labels=1, pad_token_id=plain_tokenizer.pad_token_id)  # fmt: skip
    torch.manual_seed(0)
    model = _residual_only(LlamaForSequenceClassification(config))
    a_id, b_id = plain_tokenizer.convert_tokens_to_ids(["A", "B"])
    direction = torch.zeros(32)
    direction[0] = 1.0
    with torch.no_grad():
        model.model.embed_tokens.weight[a_id] = 5 * direction + 0.01
        model.model.embed_tokens.weight[b_id] = -5 * direction + 0.01
        model.score.weight.zero_()
        model.score.weight[0] = direction  # score = first coordinate of the normalised last embedding
    judge = RewardModelJudge(model, plain_tokenizer, batch_size=2)
    first = ["xxA", "yB", "A", "this one is long B"]
    second = ["zB", "quite a bit longer A", "B", "B"]
    assert judge(["q1", "q2", "q3", "q4"], first, second) == [0.0, 1.0, 0.0, 0.5]
    assert RewardModelJudge(model, plain_tokenizer, tie_margin=100.0)(["q"], ["A"], ["B"]) == [0.5]


def test_reward_model_judge_missing_path(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        RewardModelJudge(str(tmp_path / "nothing"))


def test_llm_judge_reads_the_label_probabilities(make_model, plain_tokenizer):
    model = _residual_only(make_model())
    question = LLMJudge(model, plain_tokenizer)._question("q", "a", "b")
    last = plain_tokenizer(question)["input_ids"][-1]
    b_id = plain_tokenizer.convert_tokens_to_ids("B")
    with torch.no_grad():
        hidden = model.model.norm(model.model.embed_tokens.weight[last].unsqueeze(0)).squeeze(0)
        model.lm_head.weight.zero_()
        model.lm_head.weight[b_id] = hidden  # "B" gets logit |h|² > 0; every other token 0
    judge = LLMJudge(model, plain_tokenizer, batch_size=2)
    assert judge(["q1", "q2", "q3"], ["x", "yy", "z"], ["1", "2", "33"]) == [1.0, 1.0, 1.0]
    assert LLMJudge(model, plain_tokenizer, tie_margin=1e6)(["q"], ["x"], ["y"]) == [0.5]


class _Endpoint:
    """A real OpenAI-compatible HTTP server on 127.0.0.1; `replies` scripts each response (status, body or delay)."""

    def __init__(self):
        self.requests = []
        self.replies = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                status, content = endpoint.replies.pop(0) if endpoint.replies else (200, "A")
                if status == "sleep":
                    time.sleep(content)
                    status, content = 200, "A"
                payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint():
    server = _Endpoint()
    yield server
    server.close()


def test_openai_judge_request_and_verdicts(endpoint, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "sk-secret-123")
    endpoint.replies = [(200, "A"), (200, " b."), (200, "Tie"), (200, "I cannot decide")]
    judge = OpenAIJudge(base_url=endpoint.url, model="judge-1", api_key_env="JUDGE_KEY", backoff=0)
    assert judge(["What?"] * 4, ["x"] * 4, ["y"] * 4) == [0.0, 1.0, 0.5, None]
    request = endpoint.requests[0]
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer sk-secret-123"
    assert request["body"]["model"] == "judge-1" and request["body"]["temperature"] == 0
    assert "What?" in request["body"]["messages"][1]["content"] and "unparseable" in judge.errors[0]


def test_openai_judge_retries_after_server_errors(endpoint):
    endpoint.replies = [(500, ""), (503, ""), (200, "B")]
    judge = OpenAIJudge(base_url=endpoint.url, model="m", backoff=0, max_retries=3)
    assert judge(["q"], ["a"], ["b"]) == [1.0] and len(endpoint.requests) == 3
    endpoint.replies = [(500, "")] * 5
    assert judge(["q"], ["a"], ["b"]) == [None]
    assert "HTTP 500" in judge.errors[-1] and "after 4 attempts" in judge.errors[-1]
    endpoint.replies = [(400, "")]
    assert judge(["q"], ["a"], ["b"]) == [None] and "HTTP 400" in judge.errors[-1] and "after 1 attempt" in judge.errors[-1]


def test_openai_judge_timeout_cap_and_unreachable(endpoint):
    endpoint.replies = [("sleep", 1.0)]
    judge = OpenAIJudge(base_url=endpoint.url, model="m", timeout=0.2, max_retries=0)
    assert judge(["q"], ["a"], ["b"]) == [None] and "timed out" in judge.errors[-1]
    capped = OpenAIJudge(base_url=endpoint.url, model="m", max_requests=2)
    assert capped(["q"] * 3, ["a"] * 3, ["b"] * 3) == [0.0, 0.0, None] and "request cap of 2" in capped.errors[-1]
    closed = _Endpoint()
    url = closed.url
    closed.close()
    unreachable = OpenAIJudge(base_url=url, model="m", max_retries=1, backoff=0, timeout=1)
    assert unreachable(["q"], ["a"], ["b"]) == [None] and "reaching" in unreachable.errors[-1]


def test_openai_key_is_never_logged(endpoint, monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-show-me")
    endpoint.replies = [(500, "")] * 3 + [(200, "nonsense")]
    with caplog.at_level(logging.DEBUG):
        judge = OpenAIJudge(base_url=endpoint.url, model="m", backoff=0, max_retries=2)
        judge(["q", "q"], ["a", "a"], ["b", "b"])
    assert judge.errors and "sk-never-show-me" not in caplog.text and all("sk-never" not in e for e in judge.errors)


def test_parse_reply():
    assert [parse_reply(t) for t in ("A", "b", "**A**", "tie.", "Answer: A", "")] == [0.0, 1.0, 0.0, 0.5, None, None]


def test_openai_judge_needs_url_and_model():
    with pytest.raises(ConfigError, match="base_url"):
        OpenAIJudge(model="m")
