"""The four built-in judges, each against a construction whose verdicts are known, and their failures.

Model judges run on tiny Llama models built from configs; the ``openai`` judge talks to a real HTTP
server on 127.0.0.1.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

import dpo_plugin
from dpo_plugin.errors import ConfigError, UnknownNameError
from dpo_plugin.evaluation.judges.base import COMPARISON_TEMPLATE, Judge, compare_scores
from dpo_plugin.evaluation.judges.function import FunctionJudge
from dpo_plugin.evaluation.judges.llm import LLMJudge
from dpo_plugin.evaluation.judges.openai import SYSTEM_PROMPT, OpenAIJudge, parse_reply
from dpo_plugin.evaluation.judges.reward_model import RewardModelJudge
from dpo_plugin.testing.tiny import tiny_model

# --- registry and the shared contract -------------------------------------------------------------


def test_builtin_judges_are_registered_as_factories():
    registry = dpo_plugin.judges()
    expected = {"function": FunctionJudge, "reward_model": RewardModelJudge, "llm": LLMJudge, "openai": OpenAIJudge}
    for name, factory in expected.items():
        assert registry[name].obj is factory and registry[name].plugin == "dpo_plugin.evaluation.judges.builtin"
    judge = registry["function"].obj(function="dpo_plugin.demo.arithmetic:judge_correct")  # judge_params as keywords
    assert isinstance(judge, Judge) and judge.errors == []
    with pytest.raises(UnknownNameError, match="Did you mean 'openai'"):
        registry["opnai"]


def test_compare_scores():
    assert [compare_scores(2.0, 1.0, 0.0), compare_scores(1.0, 2.0, 0.0), compare_scores(1.0, 1.0, 0.0)] == [
        0.0,
        1.0,
        0.5,
    ]
    assert compare_scores(1.0, 1.2, 0.25) == 0.5 and compare_scores(1.0, 1.3, 0.25) == 1.0
    assert compare_scores(math.nan, 1.0, 0.0) is None and compare_scores(1.0, math.inf, 0.0) is None


def test_judges_need_as_many_answers_as_prompts():
    with pytest.raises(ValueError, match="2 prompts, 1 first and 2 second"):
        FunctionJudge(lambda p, a, b: 0)(["q", "q"], ["a"], ["b", "b"])


# --- function ---------------------------------------------------------------------------------------


def prefer_shorter(prompt, a, b):
    return 0.5 if len(a) == len(b) else (0 if len(a) < len(b) else 1)


def test_function_judge_by_reference_and_object():
    judge = FunctionJudge("dpo_plugin.demo.arithmetic:judge_correct")
    prompts = ["What is 2 + 3?"] * 3
    assert judge(prompts, ["The answer is 5.", "5", "The answer is 6."], ["no", "The answer is 5.", "nope"]) == [
        0.0,
        1.0,
        0.5,
    ]
    assert FunctionJudge(prefer_shorter)(["q"] * 3, ["ab", "abc", "xy"], ["abc", "ab", "zw"]) == [0.0, 1.0, 0.5]
    numpy_verdicts = FunctionJudge(lambda p, a, b: np.int64(1) if a == "x" else np.float32(0.5))
    assert numpy_verdicts(["q", "q"], ["x", "y"], ["b", "b"]) == [1.0, 0.5] and numpy_verdicts.errors == []


def test_function_judge_failures_are_reported_never_wins():
    def flaky(prompt, a, b):
        if a == "boom":
            raise RuntimeError("judge exploded")
        return {"x": "first", "y": 2, "z": True, "n": None, "f": math.nan}.get(a, 0)

    judge = FunctionJudge(flaky)
    assert judge(["q"] * 6, ["boom", "x", "y", "z", "n", "f"], ["b"] * 6) == [None] * 6
    assert len(judge.errors) == 6
    assert "RuntimeError: judge exploded" in judge.errors[0]
    assert (
        "returned 'first'" in judge.errors[1] and "returned 2" in judge.errors[2] and "returned True" in judge.errors[3]
    )


def test_function_judge_bad_reference():
    with pytest.raises(ConfigError, match="'package.module:function', got 'no_colon_here'"):
        FunctionJudge("no_colon_here")
    with pytest.raises(ConfigError, match="cannot be imported"):
        FunctionJudge("dpo_plugin.demo.arithmetic:nothing")
    with pytest.raises(ConfigError, match="cannot be imported"):
        FunctionJudge("no_such_module_anywhere:f")
    with pytest.raises(ConfigError, match="is a str, not a judge function"):
        FunctionJudge("dpo_plugin.plugins:ENTRY_POINT_GROUP")
    with pytest.raises(ConfigError, match="needs judge_params"):
        FunctionJudge()


# --- reward_model -----------------------------------------------------------------------------------


@pytest.fixture
def plain_tokenizer(tokenizer):
    """The tiny tokenizer without a chat template, so a scored text ends with the answer's last character."""
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    return plain


def _residual_only(model):
    """Zero every block's output projections: the last hidden state is the normalised embedding of the last token."""
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    return model


def _classifier(vocab_size, pad_token_id, seed=0, num_labels=1):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_labels=num_labels,
        pad_token_id=pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForSequenceClassification(config)


def test_reward_model_judge_prefers_answers_ending_in_A(plain_tokenizer):
    model = _residual_only(_classifier(len(plain_tokenizer), plain_tokenizer.pad_token_id))
    a_id, b_id = plain_tokenizer.convert_tokens_to_ids(["A", "B"])
    direction = torch.zeros(32)
    direction[0] = 1.0
    with torch.no_grad():
        model.model.embed_tokens.weight[a_id] = 5 * direction + 0.01
        model.model.embed_tokens.weight[b_id] = -5 * direction + 0.01
        model.score.weight.zero_()
        model.score.weight[0] = direction  # score = first coordinate of the normalised last embedding
    judge = RewardModelJudge(model, plain_tokenizer, batch_size=3)
    first = ["xxA", "yB", "A", "this one is long B"]
    second = ["zB", "quite a bit longer A", "B", "B"]
    assert judge(["q1", "q2", "q3", "q4"], first, second) == [0.0, 1.0, 0.0, 0.5]
    assert RewardModelJudge(model, plain_tokenizer, tie_margin=100.0)(["q"], ["A"], ["B"]) == [0.5]


def test_reward_model_scores_match_a_direct_forward_through_the_chat_template(tokenizer):
    model = _classifier(len(tokenizer), tokenizer.pad_token_id, seed=3)
    prompts = ["What is 2 + 3?", "Name a colour.", "Hi", "Why?"]
    answers = ["5", "A fairly long answer about colours: blue.", "Hello there", "Because."]
    judge = RewardModelJudge(model, tokenizer, batch_size=3)  # batches of different lengths: padding is exercised
    expected = []
    for prompt, answer in zip(prompts, answers):
        text = f"<|user|>{prompt}<|end|><|assistant|>{answer}<|end|>"  # the tiny chat template, written out
        ids = torch.tensor([tokenizer(text)["input_ids"]])  # one unpadded sequence
        with torch.no_grad():
            expected.append(model(input_ids=ids).logits[0, 0].item())
    assert judge.scores(prompts, answers) == pytest.approx(expected, abs=1e-5)
    reversed_answers = answers[::-1]
    direct = [compare_scores(a, b, 0.0) for a, b in zip(expected, judge.scores(prompts, reversed_answers))]
    assert judge(prompts, answers, reversed_answers) == direct and set(direct) == {0.0, 1.0}


def test_reward_model_judge_reports_non_finite_scores(plain_tokenizer):
    model = _classifier(len(plain_tokenizer), plain_tokenizer.pad_token_id)
    with torch.no_grad():
        model.score.weight.fill_(math.nan)
    judge = RewardModelJudge(model, plain_tokenizer)
    assert judge(["q", "q"], ["a", "b"], ["c", "d"]) == [None, None]
    assert len(judge.errors) == 2 and "non-finite" in judge.errors[0]


def test_reward_model_judge_loads_a_saved_folder(tmp_path, tokenizer):
    model = _classifier(len(tokenizer), tokenizer.pad_token_id, seed=5)
    model.save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    judge = RewardModelJudge(str(tmp_path / "rm"), device="cpu", dtype="float32")
    direct = RewardModelJudge(model, tokenizer)
    prompts, answers = ["q1", "q2"], ["short", "a much longer answer"]
    assert judge.scores(prompts, answers) == pytest.approx(direct.scores(prompts, answers), abs=1e-6)


def test_reward_model_judge_configuration_errors(tmp_path, tokenizer):
    with pytest.raises(ConfigError, match="does not exist"):
        RewardModelJudge(str(tmp_path / "nothing"))
    with pytest.raises(ConfigError, match="needs judge_params"):
        RewardModelJudge()
    model = _classifier(len(tokenizer), tokenizer.pad_token_id)
    with pytest.raises(ConfigError, match="needs its tokenizer"):
        RewardModelJudge(model)
    with pytest.raises(ConfigError, match="not a torch dtype"):
        RewardModelJudge(model, tokenizer, dtype="float33")
    with pytest.raises(ConfigError, match="tie_margin"):
        RewardModelJudge(model, tokenizer, tie_margin=-1)
    with pytest.raises(ConfigError, match="batch_size"):
        RewardModelJudge(model, tokenizer, batch_size=0)
    with pytest.raises(ConfigError, match="num_labels=1"):
        RewardModelJudge(_classifier(len(tokenizer), tokenizer.pad_token_id, num_labels=2), tokenizer)


# --- llm ----------------------------------------------------------------------------------------------


def _favour(model, tokenizer, question_end_id, weights):
    """lm_head rows for a residual-only model: token t gets logit weights[t]·|h|² after ``question_end_id``,
    others 0."""
    with torch.no_grad():
        hidden = model.model.norm(model.model.embed_tokens.weight[question_end_id].unsqueeze(0)).squeeze(0)
        model.lm_head.weight.zero_()
        for token_id, weight in weights.items():
            model.lm_head.weight[token_id] = weight * hidden
    return model


def test_llm_judge_reads_the_label_probabilities(make_model, plain_tokenizer):
    model = _residual_only(make_model())
    question, _ = LLMJudge(model, plain_tokenizer).question("q", "a", "b")
    last = plain_tokenizer(question)["input_ids"][-1]
    _favour(model, plain_tokenizer, last, {plain_tokenizer.convert_tokens_to_ids("B"): 1.0})
    judge = LLMJudge(model, plain_tokenizer, batch_size=2)
    assert judge(["q1", "q2", "q3"], ["x", "yy", "z"], ["1", "2", "33"]) == [1.0, 1.0, 1.0]
    assert LLMJudge(model, plain_tokenizer, tie_margin=1e6)(["q"], ["x"], ["y"]) == [0.5]


def test_llm_judge_takes_the_better_of_A_and_space_A(plain_tokenizer):
    spaced = copy.deepcopy(plain_tokenizer)
    spaced.add_tokens([" A"])  # now " A" is one token, distinct from "A"
    a_id, spaced_a_id, b_id = (
        spaced.convert_tokens_to_ids("A"),
        spaced.encode(" A")[0],
        spaced.convert_tokens_to_ids("B"),
    )
    assert spaced.encode(" A") == [spaced_a_id] and spaced_a_id not in (a_id, b_id)
    model = _residual_only(tiny_model(len(spaced), seed=0))
    last = spaced(LLMJudge(model, spaced).question("q", "a", "b")[0])["input_ids"][-1]
    _favour(model, spaced, last, {spaced_a_id: 1.0, b_id: 0.5, a_id: 0.0})  # " A" > "B" > "A"
    assert LLMJudge(model, spaced)(["q"], ["a"], ["b"]) == [0.0]
    _favour(model, spaced, last, {spaced_a_id: 0.0, b_id: 0.5, a_id: 0.0})
    assert LLMJudge(model, spaced)(["q"], ["a"], ["b"]) == [1.0]


def test_llm_judge_matches_a_direct_forward_through_the_chat_template(make_model, tokenizer):
    model = make_model(seed=1)
    prompts = [f"Question number {i}: {'why ' * i}?" for i in range(8)]
    first = [f"answer {'a' * (3 * i)}" for i in range(8)]
    second = [f"reply {i}" for i in range(8)]
    a_id, b_id = tokenizer.convert_tokens_to_ids(["A", "B"])
    sequences = []
    for prompt, a, b in zip(prompts, first, second):
        text = "<|user|>" + COMPARISON_TEMPLATE.format(prompt=prompt, first=a, second=b) + "<|end|><|assistant|>"
        sequences.append(torch.tensor([tokenizer(text)["input_ids"]]))  # one unpadded sequence each

    def last_hidden(ids):
        with torch.no_grad():
            return model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1]

    # Make logit("A") − logit("B") = d·h with d the direction along which the questions' last hidden
    # states h vary most, centred: the verdict then depends on each question's content, both ways.
    hidden = torch.stack([last_hidden(ids) for ids in sequences])
    centred = hidden - hidden.mean(dim=0)
    direction = torch.linalg.svd(centred).Vh[0]
    mean = hidden.mean(dim=0) / hidden.mean(dim=0).norm()
    direction = 20 * (direction - (direction @ mean) * mean)
    with torch.no_grad():
        model.lm_head.weight[b_id] = model.lm_head.weight[a_id] - direction
    expected, gaps = [], []
    for ids in sequences:
        with torch.no_grad():
            logps = torch.log_softmax(model(input_ids=ids).logits[0, -1].double(), dim=-1)
        expected.append(0.0 if logps[a_id] > logps[b_id] else 1.0)
        gaps.append(abs(float(logps[a_id] - logps[b_id])))
    assert set(expected) == {0.0, 1.0} and min(gaps) > 1e-3  # both verdicts, none a near-tie
    judge = LLMJudge(model, tokenizer, batch_size=3)  # batches of different lengths: padding is exercised
    assert judge(prompts, first, second) == expected


def test_llm_judge_configuration_errors(make_model, tokenizer):
    with pytest.raises(ConfigError, match="template"):
        LLMJudge(make_model(), tokenizer, template="Which is better, {first} or {second}?")
    with pytest.raises(ConfigError, match="other than"):
        LLMJudge(make_model(), tokenizer, template="{prompt} {first} {second} {extra}")
    with pytest.raises(ConfigError, match="does not exist"):
        LLMJudge("./no/such/judge")


# --- openai ---------------------------------------------------------------------------------------------


class OpenAIEndpoint:
    """A real OpenAI-compatible HTTP server on 127.0.0.1.

    ``replies`` scripts the responses in order: ``(status, content)``, ``("sleep", seconds)`` or
    ``("redirect", url)``; when it is empty, ``respond(body)`` answers (default: 200 "A").
    """

    def __init__(self):
        self.requests = []
        self.replies = []
        self.respond = lambda body: (200, "A")
        self.in_flight = self.max_in_flight = 0
        lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                endpoint.requests.append(
                    {"path": self.path, "auth": self.headers.get("Authorization"), "method": "GET"}
                )
                self._send(200, {"choices": [{"message": {"content": "A"}}]})

            def do_POST(self):
                with lock:
                    endpoint.in_flight += 1
                    endpoint.max_in_flight = max(endpoint.max_in_flight, endpoint.in_flight)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.requests.append(
                    {
                        "path": self.path,
                        "auth": self.headers.get("Authorization"),
                        "type": self.headers.get("Content-Type"),
                        "body": body,
                    }
                )
                status, content = endpoint.replies.pop(0) if endpoint.replies else endpoint.respond(body)
                if status == "sleep":
                    time.sleep(content)
                    status, content = 200, "A"
                with lock:
                    endpoint.in_flight -= 1
                if status == "redirect":
                    self.send_response(302)
                    self.send_header("Location", content)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                payload = (
                    {"choices": [{"message": {"role": "assistant", "content": content}}]}
                    if status == 200
                    else {"error": {"message": content}}
                )
                self._send(status, payload)

            def _send(self, status, payload):
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint():
    server = OpenAIEndpoint()
    yield server
    server.close()


def test_openai_judge_request_and_verdicts(endpoint, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "sk-secret-123")
    endpoint.replies = [(200, "A"), (200, " b."), (200, "Tie"), (200, "I cannot decide")]
    judge = OpenAIJudge(base_url=endpoint.url + "/", model="judge-1", api_key_env="JUDGE_KEY", backoff=0, max_tokens=4)
    assert judge(["What?", "Why?", "How?", "Who?"], ["x1", "x2", "x3", "x4"], ["y1", "y2", "y3", "y4"]) == [
        0.0,
        1.0,
        0.5,
        None,
    ]
    request = endpoint.requests[0]
    assert request["path"] == "/v1/chat/completions" and request["type"] == "application/json"
    assert request["auth"] == "Bearer sk-secret-123"
    body = request["body"]
    assert body["model"] == "judge-1" and body["temperature"] == 0 and body["max_tokens"] == 4
    assert body["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert body["messages"][1] == {
        "role": "user",
        "content": COMPARISON_TEMPLATE.format(prompt="What?", first="x1", second="y1"),
    }
    assert judge.errors == ["unparseable reply 'I cannot decide' (expected A, B or tie)"]


def test_openai_judge_without_a_key_sends_no_authorization(endpoint, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    judge = OpenAIJudge(base_url=endpoint.url + "/chat/completions", model="m")
    assert judge(["q"], ["a"], ["b"]) == [0.0]
    assert endpoint.requests[0]["auth"] is None and endpoint.requests[0]["path"] == "/v1/chat/completions"


def test_openai_judge_retries_after_server_errors(endpoint):
    endpoint.replies = [(500, "overloaded"), (503, ""), (200, "B")]
    judge = OpenAIJudge(base_url=endpoint.url, model="m", backoff=0, max_retries=3)
    assert judge(["q"], ["a"], ["b"]) == [1.0] and len(endpoint.requests) == 3 and judge.errors == []
    endpoint.replies = [(500, "overloaded")] * 5
    assert judge(["q"], ["a"], ["b"]) == [None] and len(endpoint.requests) == 7
    assert judge.errors[-1] == f"HTTP 500 from {endpoint.url}/chat/completions: overloaded (after 4 attempts)"
    endpoint.replies = [(404, "The model 'm' does not exist")]
    assert judge(["q"], ["a"], ["b"]) == [None] and len(endpoint.requests) == 8  # not retried
    assert (
        "HTTP 404" in judge.errors[-1]
        and "does not exist" in judge.errors[-1]
        and "after 1 attempt)" in judge.errors[-1]
    )


def test_openai_judge_backs_off_exponentially(endpoint):
    endpoint.replies = [(429, "slow down")] * 2 + [(200, "A")]
    judge = OpenAIJudge(base_url=endpoint.url, model="m", backoff=0.1, max_retries=2)
    start = time.monotonic()
    assert judge(["q"], ["a"], ["b"]) == [0.0]
    assert time.monotonic() - start >= 0.1 + 0.2


def test_openai_judge_timeout(endpoint):
    endpoint.replies = [("sleep", 1.0)]
    judge = OpenAIJudge(base_url=endpoint.url, model="m", timeout=0.2, max_retries=0)
    assert judge(["q"], ["a"], ["b"]) == [None] and "timed out" in judge.errors[-1]


def test_openai_judge_request_cap(endpoint):
    capped = OpenAIJudge(base_url=endpoint.url, model="m", max_requests=2)
    assert capped(["q"] * 3, ["a"] * 3, ["b"] * 3) == [0.0, 0.0, None]
    assert "request cap of 2" in capped.errors[-1] and len(endpoint.requests) == 2
    endpoint.replies = [(500, "")] * 3
    retrying = OpenAIJudge(base_url=endpoint.url, model="m", max_requests=2, max_retries=5, backoff=0)
    assert retrying(["q"], ["a"], ["b"]) == [None] and "request cap of 2" in retrying.errors[-1]  # retries count too


def test_openai_judge_unreachable_port():
    closed = OpenAIEndpoint()
    url = closed.url
    closed.close()
    judge = OpenAIJudge(base_url=url, model="m", max_retries=1, backoff=0, timeout=2)
    assert judge(["q"], ["a"], ["b"]) == [None]
    assert (
        "reaching" in judge.errors[-1]
        and "refused" in judge.errors[-1].lower()
        and "after 2 attempts" in judge.errors[-1]
    )


def test_openai_judge_refuses_redirects(endpoint, monkeypatch):
    other = OpenAIEndpoint()
    try:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-do-not-forward")
        endpoint.replies = [("redirect", other.url + "/chat/completions")]
        judge = OpenAIJudge(base_url=endpoint.url, model="m", backoff=0)
        assert judge(["q"], ["a"], ["b"]) == [None] and "HTTP 302" in judge.errors[-1]
        assert other.requests == []  # neither the request nor the key went to the other host
    finally:
        other.close()


def test_openai_judge_runs_pairs_concurrently_in_order(endpoint):
    def respond(body):
        time.sleep(0.2)
        return 200, "A" if "Response A:\ngood" in body["messages"][1]["content"] else "B"

    endpoint.respond = respond
    judge = OpenAIJudge(base_url=endpoint.url, model="m", concurrency=4)
    first = ["good", "bad", "bad", "good", "good", "bad"]
    assert judge(["q"] * 6, first, ["x"] * 6) == [0.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    assert endpoint.max_in_flight > 1


def test_openai_key_is_never_logged_or_reported(endpoint, monkeypatch, caplog):
    key = "sk-never-show-me"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    # servers echoing the key, placed where the error messages cut the text (100 and 200 characters)
    endpoint.replies = [(500, "")] * 3 + [
        (200, "x" * 95 + key),
        (401, f"Incorrect API key provided: {key}"),
        (401, "y" * 195 + key),
    ]
    with caplog.at_level(logging.DEBUG):
        judge = OpenAIJudge(base_url=endpoint.url, model="m", backoff=0, max_retries=2)
        assert judge(["q"] * 4, ["a"] * 4, ["b"] * 4) == [None] * 4
    assert len(judge.errors) == 4 and "Incorrect API key provided: ***" in judge.errors[2]
    assert "HTTP 500" in judge.errors[0] and "unparseable" in judge.errors[1]
    assert key[:6] not in caplog.text and all(key[:6] not in error for error in judge.errors)
    assert "Judge failure" in caplog.text  # the failures were logged, without the key


@pytest.mark.parametrize(
    "reply, verdict",
    [
        ("A", 0.0),
        ("b", 1.0),
        ("**A**", 0.0),
        ("tie.", 0.5),
        ("Tie", 0.5),
        ("Answer: A", 0.0),
        ("Response B is better.", 1.0),
        ("It's a tie.", 0.5),
        ("A tie", 0.5),
        ("(B)", 1.0),
        ("", None),
        ("I cannot decide", None),
        ("Response A is better than response B", None),
        ("a", 0.0),
        ("A or B?", None),
    ],
)
def test_parse_reply(reply, verdict):
    assert parse_reply(reply) == verdict


def test_openai_judge_configuration_errors(monkeypatch):
    with pytest.raises(ConfigError, match="base_url"):
        OpenAIJudge(model="m")
    with pytest.raises(ConfigError, match="base_url"):
        OpenAIJudge(base_url="localhost:8000/v1", model="m")
    with pytest.raises(ConfigError, match="model"):
        OpenAIJudge(base_url="http://127.0.0.1:1/v1")
    with pytest.raises(ConfigError, match="not the key itself") as error:
        OpenAIJudge(base_url="http://127.0.0.1:1/v1", model="m", api_key_env="sk-abc-123")
    assert "sk-abc-123" not in str(error.value)
    for bad in ({"timeout": 0}, {"max_retries": -1}, {"max_requests": 0}, {"concurrency": 0}, {"template": "{first}"}):
        with pytest.raises(ConfigError):
            OpenAIJudge(base_url="http://127.0.0.1:1/v1", model="m", **bad)
