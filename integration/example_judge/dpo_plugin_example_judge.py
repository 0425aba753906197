"""An example third-party plugin: the ``concise`` judge, which prefers the shorter answer."""

import dpo_plugin
from dpo_plugin.evaluation.judges.base import Judge


class ConciseJudge(Judge):
    """Prefers the answer that contains ``keyword``; between two that both do (or both don't), the shorter one."""

    def __init__(self, keyword: str = "answer"):
        super().__init__()
        self.keyword = keyword

    def judge_pair(self, prompt, first, second):
        """0 when ``first`` is better, 1 when ``second`` is, 0.5 for a tie."""
        has_first, has_second = self.keyword in first, self.keyword in second
        if has_first != has_second:
            return 0 if has_first else 1
        if len(first) == len(second):
            return 0.5
        return 0 if len(first) < len(second) else 1


@dpo_plugin.hookimpl
def register_judges(register):
    register("concise", ConciseJudge)
