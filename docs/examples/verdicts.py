from dpo_plugin.evaluation import length_controlled_verdict, margin_verdict, win_rate_verdict

# 12 prompts, each judged twice: 0 = the answer shown first is better, 1 = the second, 0.5 = tie, None = failure
policy_first = [0] * 10 + [0.5, 1]  # the policy's answer shown first
policy_second = [1] * 10 + [0.5, 0]  # the policy's answer shown second
win = win_rate_verdict(policy_first, policy_second, threshold=0.5, max_failure_rate=0.1, confidence=0.95)
print(win["passed"], win["wins"], win["ties"], win["losses"], win["win_rate"], (win["low"], win["high"]))

# implicit rewards r = β·log π/π_ref of 30 held-out pairs
chosen_rewards = [0.3] * 24 + [-0.1] * 6
rejected_rewards = [0.0] * 30
margin = margin_verdict(chosen_rewards, rejected_rewards, threshold=0.5, confidence=0.95)
print(margin["passed"], margin["accuracy"], (margin["low"], margin["high"]), margin["margin_mean"], margin["reasons"])

# the length-controlled win rate: 40 prompts with both answers' lengths (tokens); this judge prefers the longer
# answer on 6 prompts in 7 (a tie where the lengths are equal), and the policy's answers are mostly longer
policy_lengths = [120 + 10 * (i % 10 - 1) for i in range(40)]  # 10 tokens shorter … 80 longer than the reference's
reference_lengths = [120] * 40
longer_wins = [(p > 120) == (i % 7 != 0) for i, p in enumerate(policy_lengths)]
policy_first = [0.5 if p == 120 else 0 if won else 1 for p, won in zip(policy_lengths, longer_wins)]
policy_second = [0.5 if p == 120 else 1 if won else 0 for p, won in zip(policy_lengths, longer_wins)]
raw = win_rate_verdict(policy_first, policy_second)
lc = length_controlled_verdict(policy_first, policy_second, policy_lengths, reference_lengths)
print(
    raw["passed"],
    raw["win_rate"],
    lc["passed"],
    round(lc["lc_win_rate"], 3),
    lc["confounded"],
    round(lc["length_coefficient"], 2),
)
