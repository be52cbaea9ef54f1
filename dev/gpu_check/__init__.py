"""dev/gpu_check: what the tests cannot check, on one GPU (and on a CPU with tiny models), run as
`python dev/gpu_check --out DIR ...`; __main__.py says what it checks and how (--help prints it).

    plan.py      the parts, the checks, the --only groups, their planned times and limits, the models, the targets
    context.py   the run's context: options, work directories, the subprocesses' environment, the models built
    data.py      the data files written for the checks
    recipes.py   1 and 2: a recipe end to end through dev/recipe_probe.py, T4 mode too
    core.py      0: core, the headline: the DeepSeek recipe beside raw Unsloth and transformers + PEFT
    speed.py     3: speed against the anchors (scripts/benchmark.py)
    export.py    4: export from a 4-bit run, and the timed export worker
    runners.py   which function runs each check
    report.py    report.md, results.json, logs.tar.gz, and what a run records about itself
"""
