"""Model families: one module each (see instdiv/engine/model.py for what a family provides)."""
