"""Kill the train stage with SIGKILL part-way, run it again, and compare with an uninterrupted run: every
tensor of the model written and of the final training state, and every metric step in MLflow.

    python scripts/kill_and_resume.py [--params params.yaml] [--kill-at 1400] [--delay 3]

Both runs use the params given (checkpoints in their own folders, models under a temporary directory, the
MLflow store of the repository); it takes two trainings' time (about 4 minutes at the default setting).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import torch
import yaml


def train(params: Path, model: Path, kill_at: int | None = None, delay: float = 0.0) -> None:
    cmd = [sys.executable, "-m", "instdiv", "train", "--params", str(params), "--model", str(model), "--curves",
           str(model.parent / "curves")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        print(line, end="", flush=True)
        done = re.match(r"step\s+(\d+)/", line)
        if kill_at is not None and done and int(done.group(1)) >= kill_at:
            time.sleep(delay)  # past the checkpoint of that step: some steps are trained and logged again
            os.kill(proc.pid, signal.SIGKILL)
            print(f"-- killed with SIGKILL {delay} s after the checkpoint of step {done.group(1)}", flush=True)
            break
    proc.wait()


def tensors(obj, prefix=""):
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from tensors(v, f"{prefix}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from tensors(v, f"{prefix}.{i}")


def history(client, run_id: str) -> dict:
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
            for key in client.get_run(run_id).data.metrics}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--kill-at", type=int, default=1400, help="kill after the first checkpoint from this step on")
    ap.add_argument("--delay", type=float, default=3.0, help="seconds between that checkpoint and the kill")
    args = ap.parse_args()
    base = yaml.safe_load(Path(args.params).read_text())
    with tempfile.TemporaryDirectory(prefix="instdiv-resume-") as tmp:
        tmp = Path(tmp)
        runs = {}
        for name in ("uninterrupted", "killed"):
            base.setdefault("train", {})["checkpoint_dir"] = str(tmp / name / "checkpoints")
            params = tmp / name / "params.yaml"
            params.parent.mkdir()
            params.write_text(yaml.safe_dump(base))
            model = tmp / name / "model.pt"
            if name == "killed":
                train(params, model, args.kill_at, args.delay)
                assert not model.exists(), "the run finished before it was killed: lower --kill-at"
            train(params, model)
            runs[name] = (model, json.loads(model.with_suffix(".json").read_text())["run_id"],
                          next((tmp / name / "checkpoints").iterdir()) / "last.ckpt")
        (m1, r1, c1), (m2, r2, c2) = runs["uninterrupted"], runs["killed"]
        a, b = torch.load(m1, weights_only=True)["state_dict"], torch.load(m2, weights_only=True)["state_dict"]
        model_same = [k for k in a if torch.equal(a[k], b[k])]
        s1 = {k.replace(str(c1.parent), "<dir>"): v for k, v in tensors(torch.load(c1, weights_only=True))}
        s2 = {k.replace(str(c2.parent), "<dir>"): v for k, v in tensors(torch.load(c2, weights_only=True))}
        state_same = [k for k in s1 if k in s2 and torch.equal(s1[k], s2[k])]
        from instdiv.engine.tracking import tracking_uri
        from instdiv.params import load_params

        client = mlflow.MlflowClient(tracking_uri(load_params(args.params).tracking))
        h1, h2 = history(client, r1), history(client, r2)
        repeated = {k: len(v) - len({s for s, _ in v}) for k, v in h2.items() if k != "epoch"}
        result = {"model_tensors_identical": f"{len(model_same)}/{len(a)}",
                  "training_state_tensors_identical": f"{len(state_same)}/{len(s1)}",
                  "metric_histories_identical": h1 == h2,
                  "metric_points": {"uninterrupted": sum(map(len, h1.values())),
                                    "resumed": sum(map(len, h2.values()))},
                  "steps_logged_twice_after_resume": sum(repeated.values()),
                  "runs": {"uninterrupted": r1, "resumed": r2}}
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
