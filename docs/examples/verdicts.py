from dpo_plugin.evaluation import margin_verdict, win_rate_verdict

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
