"""Pretrained causal LMs from a local Hugging Face directory (`model.kind: hf`), fine-tuned in full or with LoRA.

Any directory `save_pretrained` (or `huggingface-cli download --local-dir`) wrote: config.json, the weights and
the tokenizer files. The suite never reaches the network for weights: a hub name is answered with the command
that downloads it. The model reads its own tokenizer with `model.prompt_format` around every prompt; the loss
falls on the response alone (instdiv/engine/text.py) and decoding is `generate`'s greedy search with its KV
cache. With LoRA the saved state (model files, Lightning checkpoints) is the adapter only: the base is read
from `model.path` again and checked against the SHA-256 it had when the adapter was trained.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import re
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F

from instdiv.config import Number, Section, positive
from instdiv.engine.model import ModelFamily
from instdiv.engine.text import Tokenizer, _pad
from instdiv.errors import ConfigError, DataError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


class HFSection(Section):
    """`model` when model.kind is hf."""

    section: ClassVar[str] = "model"
    kind: Literal["hf"] = "hf"
    path: str = ""  # a local directory with config.json, the weights and the tokenizer
    # LoRA adapters of rank lora_r on lora_target_modules (null: every linear layer but the output head);
    # lora_r null: full fine-tuning.
    lora_r: int | None = 16
    lora_alpha: Number = 32
    lora_dropout: Number = 0.05
    lora_target_modules: list[str] | None = None
    # The frozen base in 8 or 4 bits through bitsandbytes (a CUDA GPU; LoRA only).
    quantize: Literal["none", "8bit", "4bit"] = "none"
    # The text around every prompt; special tokens written in it are read as such ("<s>{prompt}" adds BOS).
    prompt_format: str = "{prompt}"
    # The weights' dtype; auto: bfloat16 on a GPU, float32 on a CPU (where bf16 matmuls are slow).
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"

    def check(self) -> None:
        if not self.path:
            raise ConfigError("model.path: give the local directory of a Hugging Face causal LM (config.json, "
                              "weights, tokenizer), e.g. one written by save_pretrained")
        if "{prompt}" not in self.prompt_format:
            raise ConfigError(f"model.prompt_format={self.prompt_format!r} must contain {{prompt}}")
        if self.lora_r is not None:
            positive(self, "lora_r", "lora_alpha")
            if not 0.0 <= self.lora_dropout < 1.0:
                raise ConfigError(f"model.lora_dropout={self.lora_dropout} is outside [0, 1)")
            if self.lora_target_modules is not None and not self.lora_target_modules:
                raise ConfigError("model.lora_target_modules is empty; name modules (q_proj, v_proj...) or use "
                                  "null for every linear layer")
        elif self.quantize != "none":
            raise ConfigError(f"model.quantize={self.quantize} trains adapters on a frozen base: set model.lora_r "
                              "(a quantized base cannot be fine-tuned in full), or model.quantize: none")


def check_directory(path: str) -> Path:
    """The model directory, or one line saying what is wrong and what to do."""
    p = Path(path)
    if not p.is_dir():
        if re.fullmatch(r"[\w.-]+/[\w.-]+", path) and not p.exists():
            raise ConfigError(f"model.path={path} is not a local directory; it looks like a Hugging Face hub name, "
                              "and this suite reads weights from disk only: download them first (huggingface-cli "
                              f"download {path} --local-dir models/{path.split('/')[-1]}) and set model.path to "
                              "that directory")
        raise ConfigError(f"model.path={path}: no such directory; give the directory of a Hugging Face causal LM")
    if not (p / "config.json").is_file():
        raise ConfigError(f"model.path={path} has no config.json: not a Hugging Face model directory "
                          "(save_pretrained writes one)")
    return p


def directory_sha256(path: str | Path) -> str:
    """SHA-256 over the config and weight files (names and bytes): what identifies a base model."""
    p = Path(path)
    files = sorted(f for f in p.iterdir() if f.is_file() and (f.name == "config.json" or f.suffix in WEIGHT_SUFFIXES))
    return _sha256(tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))


@functools.lru_cache(maxsize=16)
def _sha256(files: tuple[tuple[str, int, int], ...]) -> str:
    """Cached per (file, size, mtime): a 7B base takes a minute to hash and is asked for more than once."""
    h = hashlib.sha256()
    for name, _, _ in files:
        h.update(Path(name).name.encode() + b"\0")
        with open(name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                h.update(chunk)
    return h.hexdigest()


def _dtype(name: str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return getattr(torch, name)


class HFTokenizer(Tokenizer):
    """A pretrained model's tokenizer in the engine's terms. PAD is its pad token, else EOS: targets end where
    the response ends (engine/text.py), so a PAD equal to EOS is never mistaken for the end of a response."""

    def __init__(self, hf, prompt_format: str = "{prompt}"):
        if hf.eos_token_id is None:
            raise ConfigError("model.path: its tokenizer has no EOS token, so generation could not stop; give the "
                              "tokenizer an eos_token and save it again")
        self.hf = hf
        self.eos_id = int(hf.eos_token_id)
        self.pad_id = int(hf.pad_token_id) if hf.pad_token_id is not None else self.eos_id
        self.vocab_size = len(hf)
        self.prompt_format = prompt_format

    def _ids(self, texts: list[str]) -> list[list[int]]:
        return self.hf(list(texts), add_special_tokens=False)["input_ids"] if len(texts) else []

    def encode_padded(self, texts: list[str], width: int, left: bool = False) -> np.ndarray:
        ids = self._ids(texts)
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        flat = np.fromiter((i for row in ids for i in row), dtype=np.int64, count=int(lengths.sum()))
        return _pad(flat, lengths, width, left, self.pad_id)

    def lengths(self, texts: list[str]) -> np.ndarray:
        return np.fromiter(map(len, self._ids(texts)), dtype=np.int64, count=len(texts))

    def decode(self, ids) -> str:
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        if self.eos_id in ids:
            ids = ids[:ids.index(self.eos_id)]
        return self.hf.decode([i for i in ids if i != self.pad_id], skip_special_tokens=False)


def load_tokenizer(cfg: HFSection) -> HFTokenizer:
    from transformers import AutoTokenizer

    path = check_directory(cfg.path)
    try:
        hf = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # no tokenizer files, or ones this transformers cannot read
        raise ConfigError(f"model.path={cfg.path}: no tokenizer could be loaded from it ({exc}); save the model's "
                          "tokenizer in the same directory (tokenizer.save_pretrained)") from None
    return HFTokenizer(hf, cfg.prompt_format)


class HFCausalLM(torch.nn.Module):
    """A transformers causal LM (with its LoRA adapters) behind the engine's model surface
    (instdiv/engine/model.py). `spec` rebuilds it: the base directory and its hash, the adapters, the data's
    block size."""

    def __init__(self, spec: dict):
        super().__init__()
        from transformers import AutoModelForCausalLM

        self.spec = dict(spec)
        path = check_directory(spec["path"])
        if spec.get("base_sha256") and directory_sha256(path) != spec["base_sha256"]:
            raise DataError(f"model.path={spec['path']} no longer holds the base this model was fine-tuned from "
                            f"(SHA-256 {spec['base_sha256'][:12]}...); restore that base or retrain")
        kwargs: dict = {"local_files_only": True, "dtype": _dtype(spec["dtype"])}
        if spec["quantize"] != "none":
            from transformers import BitsAndBytesConfig

            bits = spec["quantize"]
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_8bit=bits == "8bit", load_in_4bit=bits == "4bit",
                bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_type="nf4")
            kwargs["device_map"] = {"": torch.cuda.current_device()}
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        positions = getattr(model.config, "max_position_embeddings", None)
        if positions is not None and spec["block_size"] > positions:
            raise ConfigError(f"model.path={spec['path']} takes {positions} positions and the data needs "
                              f"{spec['block_size']}; shorten the rows or pick a model with a longer context")
        if spec["vocab_size"] > model.get_input_embeddings().num_embeddings:
            raise ConfigError(f"model.path={spec['path']}: its tokenizer has {spec['vocab_size']} tokens and its "
                              f"embeddings {model.get_input_embeddings().num_embeddings}; save matching ones")
        lora = spec.get("lora")
        if lora:
            from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

            if spec["quantize"] != "none":
                model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
            # peft keeps the adapters in float32 over a bf16 base (autocast_adapter_dtype)
            model = get_peft_model(model, LoraConfig(
                r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"], task_type="CAUSAL_LM",
                target_modules=lora["target_modules"] or "all-linear"))
        self.model = model.train()  # from_pretrained leaves it in eval mode, which would switch dropout off
        self.block_size = spec["block_size"]
        self.frozen = {n for n, p in self.named_parameters() if not p.requires_grad}
        if self.frozen:  # the base: read from model.path again, not copied into every file and checkpoint
            self.register_state_dict_post_hook(_drop_frozen)
            self.register_load_state_dict_post_hook(_frozen_not_missing)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def trainable_params(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def forward(self, idx, targets=None):
        """Logits for right-padded sequences (causal: the padding after a row never reaches it) and the mean
        cross-entropy over targets != -100."""
        logits = self.model(input_ids=idx, use_cache=False).logits
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten().long(), ignore_index=-100)

    @torch.no_grad()
    def generate(self, prompt, prompt_mask, max_new_tokens: int, eos_id: int, pad_id: int = 0,
                 temperature: float = 0.0) -> torch.Tensor:
        """Greedy continuation of left-padded prompts through `generate` (its KV cache), the new tokens only;
        with a temperature > 0, plain sampling at that temperature (no top-k or top-p)."""
        from transformers import GenerationConfig

        # Every decoding setting given here, so a sampling default in the model's generation_config is not used.
        sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0 \
            else {"do_sample": False}
        config = GenerationConfig(max_new_tokens=max_new_tokens, num_beams=1, eos_token_id=eos_id,
                                  pad_token_id=pad_id, use_cache=True, **sampling)
        out = self.model.generate(input_ids=prompt.long(), attention_mask=prompt_mask.long(),
                                  generation_config=config)
        return out[:, prompt.size(1):]

    def configure_optimizer(self, lr: float, weight_decay: float, betas=(0.9, 0.95)):
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=all(p.is_cuda for p in params) or None)

    def export(self, directory: Path) -> dict:
        """The adapter (or the whole fine-tuned model) and the tokenizer in Hugging Face form, and what names the
        base: the directory's name and hash."""
        from transformers import AutoTokenizer

        self.model.save_pretrained(directory)
        AutoTokenizer.from_pretrained(self.spec["path"], local_files_only=True).save_pretrained(directory)
        (directory / "instdiv_spec.json").write_text(json.dumps(self.spec, indent=2) + "\n")
        return {"base_model": Path(self.spec["path"]).name, "base_model_sha256": self.spec["base_sha256"],
                "adapter": "lora" if self.spec.get("lora") else "none (full fine-tuning)"}


def _drop_frozen(module: HFCausalLM, state_dict: dict, prefix: str, local_metadata) -> None:
    for name in module.frozen:
        state_dict.pop(prefix + name, None)


def _frozen_not_missing(module: HFCausalLM, incompatible) -> None:
    """Frozen base weights are absent from saved states by design (_drop_frozen), not missing."""
    keep = [k for k in incompatible.missing_keys
            if not any(k.split(".", i)[-1] in module.frozen for i in range(k.count(".") + 1))]
    incompatible.missing_keys[:] = keep


def save_random_model(directory: Path, arch: str = "llama", hidden: int = 32, layers: int = 2, heads: int = 4,
                      positions: int = 512, merges: tuple[tuple[str, str], ...] = (), seed: int = 0,
                      intermediate: int | None = None) -> Path:
    """A randomly initialized Llama (or GPT-2) with a character-level tokenizer over printable ASCII (plus the
    given BPE merges), saved as a local model directory: what the tests and benchmarks fine-tune without a
    network, and a real architecture of any size for GPU measurements."""
    import string

    from tokenizers import Tokenizer as CoreTokenizer
    from tokenizers import decoders, models
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<s>", "<unk>"]
    chars = sorted(set(string.printable) - set("\x0b\x0c\r"))
    vocab = {t: i for i, t in enumerate(specials + chars + ["".join(m) for m in merges])}
    core = CoreTokenizer(models.BPE(vocab=vocab, merges=list(merges), unk_token="<unk>"))
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", bos_token="<s>",
                                  unk_token="<unk>")
    ids = dict(vocab_size=len(vocab), pad_token_id=0, eos_token_id=1, bos_token_id=2)
    if arch == "llama":
        config = LlamaConfig(hidden_size=hidden, intermediate_size=intermediate or 4 * hidden, num_hidden_layers=layers,
                             num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=positions,
                             **ids)
    elif arch == "gpt2":
        config = GPT2Config(n_embd=hidden, n_layer=layers, n_head=heads, n_positions=positions, **ids)
    else:
        raise ConfigError(f"arch={arch}: llama or gpt2")
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return Path(directory)


class HFFamily(ModelFamily):
    """Pretrained causal LMs from local Hugging Face directories."""

    kind = "hf"
    Config = HFSection

    def check(self, cfg: HFSection) -> None:
        check_directory(cfg.path)
        if cfg.quantize != "none":
            if not torch.cuda.is_available():
                raise ConfigError(f"model.quantize={cfg.quantize} needs a CUDA GPU (bitsandbytes); this machine has "
                                  "none: set model.quantize: none")
            if importlib.util.find_spec("bitsandbytes") is None:
                raise ConfigError(f"model.quantize={cfg.quantize} needs the bitsandbytes package: pip install "
                                  "bitsandbytes, or set model.quantize: none")

    def identity(self, cfg: HFSection) -> dict:
        return {"base_sha256": directory_sha256(check_directory(cfg.path))}

    def tokenizer(self, cfg: HFSection, task_tokenizer) -> HFTokenizer:
        return load_tokenizer(cfg)

    def build(self, cfg: HFSection, tokenizer: HFTokenizer, block_size: int) -> HFCausalLM:
        self.check(cfg)
        lora = None
        if cfg.lora_r is not None:
            lora = {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout,
                    "target_modules": cfg.lora_target_modules}
        return HFCausalLM({"path": str(cfg.path), "base_sha256": directory_sha256(cfg.path), "lora": lora,
                           "quantize": cfg.quantize, "dtype": cfg.dtype, "prompt_format": cfg.prompt_format,
                           "block_size": block_size, "vocab_size": tokenizer.vocab_size})

    def spec(self, network: HFCausalLM) -> dict:
        return network.spec

    def export(self, network: HFCausalLM, directory: Path) -> dict:
        return network.export(directory)

    def rebuild(self, spec: dict) -> HFCausalLM:
        return HFCausalLM(spec)


FAMILY = HFFamily()
