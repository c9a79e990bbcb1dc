"""Pretrained causal LMs from local Hugging Face directories (model.kind: hf), on a tiny random Llama (and
GPT-2) with a tokenizer the tests build: load from the path, fine-tune in full and with LoRA, resume exactly,
decode, score and log, with no network."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from conftest import Interrupted, params, tiny_hf_model

from instdiv.engine import model as models
from instdiv.engine import stages, text, training
from instdiv.errors import ConfigError
from instdiv.models.hf import FAMILY as HF
from instdiv.models.hf import HFSection, load_tokenizer
from instdiv.tasks.rewrite import TASK

DATA = Path("data/rewrite")
FORMAT = "<s>Rule and input: {prompt}\nOutput: "


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    return tiny_hf_model(tmp_path_factory.mktemp("hf") / "tiny-llama")


@pytest.fixture
def hf_params(tiny, in_tmp, base_dir):
    tiny["model"] = {"kind": "hf", "path": str(base_dir), "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.1,
                     "prompt_format": FORMAT}
    tiny["train"].update(max_steps=16, val_every_steps=8, lr=3e-3)
    p = params(tiny)
    stages.generate(p, TASK, DATA)
    return p


def test_the_response_is_tokenized_apart_and_alone_takes_the_loss(base_dir):
    """A BPE merge across the prompt/response boundary ("a" + "b") would shift the response; tokenized apart,
    the targets are exactly the response's own tokens and EOS, and the prompt carries the model's format."""
    tok = load_tokenizer(HFSection(path=str(base_dir), prompt_format=FORMAT))
    assert tok.pad_id == 0 and tok.eos_id == 1
    assert tok.lengths(["ab"]).tolist() == [1]  # the merge
    x, y = text.training_tensors(tok, ["xa", "q"], ["bc", "abab"], 40)
    formatted = tok.prompts(["xa"])[0]
    assert formatted.startswith("<s>Rule and input: xa\nOutput: ")
    n_prompt = int(tok.lengths([formatted])[0])
    assert x[0, 0].item() == 2  # the BOS written in the format is read as the special token
    response = tok.encode_padded(["bc"], 2)[0].tolist()
    assert y[0][y[0] != text.IGNORE].tolist() == response + [tok.eos_id]
    assert x[0, n_prompt:n_prompt + 2].tolist() == response
    assert y[1][y[1] != text.IGNORE].tolist() == tok.encode_padded(["abab"], 2)[0].tolist() + [tok.eos_id]
    assert tok.decode(torch.tensor(response + [tok.eos_id, 5, 5])) == "bc"


def test_lora_fine_tunes_decodes_scores_and_logs(hf_params, in_tmp, base_dir):
    p = hf_params
    info = stages.train(p, TASK, DATA, Path("models/model.pt"), Path("reports/plots"))
    assert info["steps"] == 16
    blob = torch.load("models/model.pt", weights_only=True)
    assert blob["kind"] == "hf" and blob["config"]["lora"]["r"] == 4
    saved = blob["state_dict"]
    assert saved and all("lora_" in k for k in saved), "the file holds the adapter, not the base"
    network, _ = models.load(Path("models/model.pt"))
    base = {n: p_ for n, p_ in network.named_parameters() if "lora_" not in n}
    assert network.trainable_params() < network.num_params() // 2 and base
    # the adapter moved, and the base came back from model.path as it was
    fresh = HF.build(p.model, load_tokenizer(p.model), network.block_size)
    assert any(not torch.equal(saved[k], v) for k, v in fresh.state_dict().items() if k in saved)
    assert all(torch.equal(v, dict(fresh.named_parameters())[n]) for n, v in base.items())

    metrics = stages.evaluate(p, TASK, DATA, Path("models/model.pt"), Path("reports"), "instdiv train")
    assert 0.0 <= metrics["seen_accuracy"] <= 1.0 and metrics["seen_examples"] > 0
    predictions = (in_tmp / "reports" / "predictions.csv").read_text()
    assert "predicted" in predictions.splitlines()[0]

    client = mlflow.MlflowClient(f"sqlite:///{in_tmp}/mlruns/mlflow.db")
    run = client.get_run(info["run_id"])
    assert run.data.tags["model.base_model"] == "tiny-llama"
    assert len(run.data.tags["model.base_model_sha256"]) == 64
    assert "test/seen_accuracy" in run.data.metrics
    files = {f.path for f in client.list_artifacts(info["run_id"], "hf_model")}
    assert {"hf_model/adapter_config.json", "hf_model/adapter_model.safetensors", "hf_model/tokenizer.json"} <= files
    # and the text-in, text-out model, by name, on the adapter over its base
    served = mlflow.pyfunc.load_model(f"models:/{info['model_id']}")
    assert all(isinstance(o, str) for o in served.predict(["ab>cd|xxabyy="]))


def test_greedy_decoding_through_generate_matches_step_by_step_argmax(hf_params):
    """`generate` (KV cache, left padding) against a plain loop of full forward passes, row by row unpadded."""
    p = hf_params
    tok = load_tokenizer(p.model)
    network = HF.build(p.model, tok, 64).eval()
    prompts = ["ab>cd|xxabyy=", "q>r|qq="]
    ids, mask = text.prompt_tensors(tok, prompts, 48)
    out = network.generate(ids, mask, 6, tok.eos_id, tok.pad_id)
    for row, prompt in enumerate(tok.prompts(prompts)):
        seq = torch.from_numpy(tok.encode_padded([prompt], int(tok.lengths([prompt])[0])))
        want = []
        for _ in range(6):
            nxt = network.model(input_ids=seq).logits[0, -1].argmax().item()
            want.append(nxt)
            if nxt == tok.eos_id:
                break
            seq = torch.cat([seq, torch.tensor([[nxt]])], 1)
        assert out[row, :len(want)].tolist() == want


def test_full_fine_tuning_saves_every_weight_and_learns(hf_params, base_dir):
    p = hf_params.replace(model=HFSection(path=str(base_dir), lora_r=None, prompt_format=FORMAT),
                          train=hf_params.train.replace(max_steps=30, lr=1e-2))
    tok = stages.tokenizer(p, TASK)
    data = training.fit_data(TASK, tok, p, TASK.read(DATA)[0])
    network, _, _ = training.fit(p, TASK, tok, data, logger=False, ckpt_dir=Path("checkpoints/full"),
                                    verbose=False)
    assert network.trainable_params() == network.num_params()
    assert len(network.state_dict()) == len(dict(network.model.state_dict()))
    x, y = data.train.tensors
    before = HF.build(p.model, tok, data.block_size)
    with torch.no_grad():
        loss_before = before(x[:64].long(), y[:64].long())[1].item()
        loss_after = network(x[:64].long(), y[:64].long())[1].item()
    assert loss_after < 0.8 * loss_before


def test_a_killed_lora_run_resumes_to_exactly_the_uninterrupted_result(hf_params, in_tmp, kill_training_at):
    """Adapter-only checkpoints (the base is read from model.path again) resume to the same adapter, bit for
    bit, and the same validation history, as a run never interrupted."""
    p = hf_params.replace(train=hf_params.train.replace(max_steps=20, val_every_steps=7))
    reference = stages.train(p.replace(train=p.train.replace(checkpoint_dir="reference")), TASK, DATA,
                             Path("models/reference.pt"), None)
    kill_training_at(10)
    with pytest.raises(Interrupted):
        stages.train(p, TASK, DATA, Path("models/model.pt"), None)
    (ckpt_dir,) = (in_tmp / "checkpoints").iterdir()
    ckpt = torch.load(ckpt_dir / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 7 and all("lora_" in k or k.startswith("acc.") for k in ckpt["state_dict"])
    kill_training_at(None)
    resumed = stages.train(p, TASK, DATA, Path("models/model.pt"), None)
    written = torch.load("models/model.pt", weights_only=True)["state_dict"]
    expected = torch.load("models/reference.pt", weights_only=True)["state_dict"]
    assert written.keys() == expected.keys()
    assert all(torch.equal(written[k], expected[k]) for k in expected)
    assert resumed["last_validation"] == reference["last_validation"]


def test_a_changed_base_is_refused_when_the_adapter_is_loaded(hf_params, tmp_path):
    p = hf_params
    base = tiny_hf_model(tmp_path / "base")
    p = p.replace(model=p.model.replace(path=str(base)))
    tok = stages.tokenizer(p, TASK)
    network = HF.build(p.model, tok, 64)
    models.save(Path("models/a.pt"), HF, network, prompt_width=30)
    tiny_hf_model(base, seed=1)  # other weights in the same directory
    with pytest.raises(Exception, match="no longer holds the base"):
        models.load(Path("models/a.pt"))


def test_gpt2_architecture_trains_with_lora_too(tiny, in_tmp, tmp_path):
    base = tiny_hf_model(tmp_path / "tiny-gpt2", arch="gpt2")
    tiny["model"] = {"kind": "hf", "path": str(base), "lora_r": 4}
    tiny["train"].update(max_steps=4, val_every_steps=4)
    p = params(tiny)
    stages.generate(p, TASK, DATA)
    info = stages.train(p, TASK, DATA, Path("models/model.pt"), None)
    assert info["steps"] == 4 and info["trainable_parameters"] < info["parameters"]


@pytest.mark.parametrize("change,message", [
    ({"path": "meta-llama/Llama-2-7b-hf"}, "download them first (huggingface-cli download meta-llama/Llama-2-7b-hf"),
    ({"path": "no/such/dir/here"}, "no such directory"),
    ({"quantize": "8bit"}, "needs a CUDA GPU" if not torch.cuda.is_available() else "bitsandbytes"),
])
def test_what_the_machine_lacks_is_one_line_before_any_work(tiny, in_tmp, base_dir, change, message):
    tiny["model"] = {"kind": "hf", "path": str(base_dir), **change}
    p = params(tiny)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        stages.train(p, TASK, DATA, Path("models/model.pt"), None)
    assert not Path("models").exists()


@pytest.mark.parametrize("model,message", [
    ({"kind": "hf"}, "model.path: give the local directory"),
    ({"kind": "hf", "path": "x", "prompt_format": "no slot"}, "must contain {prompt}"),
    ({"kind": "hf", "path": "x", "lora_r": None, "quantize": "4bit"}, "cannot be fine-tuned in full"),
    ({"kind": "hf", "path": "x", "lora_dropout": 1.5}, "model.lora_dropout=1.5"),
])
def test_bad_model_settings(tiny, model, message):
    tiny["model"] = model
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
        params(tiny)


def test_hub_loading_path_is_the_real_one(base_dir, monkeypatch):
    """No network is reached: the directory loads with local_files_only, HF_HUB_OFFLINE or not."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    network = HF.build(HFSection(path=str(base_dir)), load_tokenizer(HFSection(path=str(base_dir))), 32)
    assert network.model.config.model_type == "llama" and json.loads((base_dir / "config.json").read_text())
    assert np.isfinite(network(torch.zeros(1, 4, dtype=torch.long))[0].detach().numpy()).all()


def test_code_mix_fine_tunes_and_is_scored_by_running_what_it_writes(tiny, in_tmp, base_dir):
    """The code study on a pretrained model: a mix trained with LoRA, then its programs run in the sandbox."""
    from instdiv.tasks.code import mix, programs
    from instdiv.tasks.code import study as codetrain

    tiny["model"] = {"kind": "hf", "path": str(base_dir), "lora_r": 4,
                     "prompt_format": "<s>{prompt}"}
    tiny["code_model"].update(epochs=1, seeds=[0])
    p = params(tiny)
    programs.write(programs.generate(p.code), p.code)
    mix.run(p.mix, 25)
    info = codetrain.train(p, 25, 0)
    assert info["steps"] > 0 and info["trainable_parameters"] < info["parameters"]
    m = codetrain.evaluate(p, 25, 0)
    assert m["programs"] == 5 and 0 <= m["pass_at_1"] <= 1 and 0 <= m["train_pass_at_1"] <= 1
    written = (in_tmp / "reports/code/evals/general-25-seed0-samples.csv").read_text()
    assert "written" in written.splitlines()[0]
