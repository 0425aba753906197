"""Built-in post-training checks: ``check(ctx: EvalContext, **check_params) -> CheckResult``."""
