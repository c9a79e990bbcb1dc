"""The code task: English instructions for small list programs, answered with Python that is run against
hidden tests (pass@1), trained on mixes of code and general-domain instructions at a fixed budget.

The task (task.py), programs (programs.py), general-domain tasks (general.py), mixes (mix.py), real data
files (loaders.py), the sandbox that runs model-written code (sandbox.py), the study's stages (study.py,
report.py) and their CLI commands (cli.py).
"""

from instdiv.tasks.code.cli import register as register_commands
from instdiv.tasks.code.task import TASK

__all__ = ["TASK", "register_commands"]
