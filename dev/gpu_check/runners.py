"""Which function runs each check: Check.run (in plan.CHECKS) -> the runner of its part, called as RUNNER(ctx, check)
and returning the check's row."""
from dev.gpu_check.core import run_core
from dev.gpu_check.export import run_export
from dev.gpu_check.recipes import run_recipe
from dev.gpu_check.speed import run_speed

RUNNERS = {"core": run_core, "recipe": run_recipe, "speed": run_speed, "export": run_export}
