"""Registers the built-in judges."""

from __future__ import annotations

from ...hookspecs import Register, hookimpl
from .function import FunctionJudge
from .llm import LLMJudge
from .openai import OpenAIJudge
from .reward_model import RewardModelJudge


@hookimpl
def register_judges(register: Register) -> None:
    register("function", FunctionJudge, description="A Python callable (prompt, a, b) -> 0 | 1 | 0.5.")
    register("reward_model", RewardModelJudge, description="A sequence-classification reward model scores each answer.")
    register("llm", LLMJudge, description="A local causal LM; next-token probabilities of 'A' vs 'B'.")
    register("openai", OpenAIJudge, description="An OpenAI-compatible chat endpoint (retries, timeout, request cap).")
