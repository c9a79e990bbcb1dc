"""The MLflow model-from-code file of every model the suite logs (tracking.log_model): no pickled object,
MLflow runs this file to build the model (instdiv/engine/serving.py says what it does)."""

import mlflow

from instdiv.engine.serving import TextModel

mlflow.models.set_model(TextModel())
