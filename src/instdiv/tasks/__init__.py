"""Tasks: one package each (see instdiv/engine/task.py for what a task provides)."""
