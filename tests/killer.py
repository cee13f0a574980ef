"""Run the graphrag-migrate CLI, but SIGKILL it inside one step (before or after that step's apply, or
— `during-loadtest` — while a load test runs inside it), as a power cut or `kill -9` would.
Test-only: the product has no such hook.

    python tests/killer.py STEP_ID before|after|during-loadtest -- <graphrag-migrate arguments>
"""

import os
import signal
import sys

from migrator.core import engine


def main() -> None:
    step_id, when = sys.argv[1], sys.argv[2]
    args = sys.argv[sys.argv.index("--") + 1:]
    original = engine.Step.apply
    patched_classes = set()

    def apply(self, ctx):
        if self.id == step_id and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = type(self).__dict__.get("_original_apply", original)(self, ctx)
        if self.id == step_id and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    import phases.phase1
    import phases.phase2
    import phases.phase3
    import phases.phase4
    import phases.staging

    if when == "during-loadtest":
        from migrator.bench import run as bench

        def measure(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)

        bench.measure = measure
    for module in (phases.phase1, phases.phase2, phases.phase3, phases.phase4, phases.staging):
        for obj in vars(module).values():
            # engine.Step itself is left alone (the modules import it): a step whose apply calls super().apply
            # must reach the real one, not this wrapper again
            if isinstance(obj, type) and issubclass(obj, engine.Step) and obj is not engine.Step \
                    and obj not in patched_classes:
                if "apply" in obj.__dict__:
                    obj._original_apply = obj.__dict__["apply"]
                obj.apply = apply
                patched_classes.add(obj)
    sys.argv = ["graphrag-migrate", *args]
    from migrator.cli.main import main as cli

    cli()


if __name__ == "__main__":
    main()
