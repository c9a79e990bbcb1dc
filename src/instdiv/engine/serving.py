"""The logged model as MLflow users load it: text in, text out.

`mlflow.pyfunc.load_model("models:/instdiv-rewrite@champion").predict(["ane>nhp|yanemtrhth="])` returns the
model's completions (`["ynhpmtrhth"]`): the task's prompts, as `instdiv evaluate` writes them in predictions,
decoded greedily. It reads the model file the run logged (the suite's own format, loaded with
weights_only=True) and the task and params it was trained with; the package travels with the model
(`code_paths`), so loading needs no checkout. pyfunc_model.py is the model-from-code file MLflow runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc


class TextModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from instdiv import registry
        from instdiv.engine import model as models
        from instdiv.engine.training import device
        from instdiv.params import params_from_dict

        meta = json.loads(Path(context.artifacts["meta"]).read_text())
        params = params_from_dict(meta["params"])
        self.device = device()
        self.network, extras = models.load(Path(context.artifacts["weights"]), self.device)
        task = registry.task(meta["task"])
        self.tok = registry.family(params.model.kind).tokenizer(params.model, task.tokenizer(params))
        self.width, self.batch = extras["prompt_width"], params.evaluate.batch_size

    def predict(self, context, model_input, params=None) -> list[str]:
        """Completions of the prompts: a list of strings, or a DataFrame (its first column)."""
        from instdiv.engine import decoding

        if hasattr(model_input, "iloc"):
            model_input = model_input.iloc[:, 0]
        prompts = [str(p) for p in list(model_input)]
        return decoding.complete(self.network, self.tok, prompts, self.width, self.batch, self.device)
