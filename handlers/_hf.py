"""PyTorch / Hugging Face side of the reference handlers: the built-in stand-in base models,
the dataset -> token examples step shared by train and evaluate, and model.tar packing.

Stand-ins: no weights can be downloaded on our machines, so a name in STAND_INS
(llama-3-8b, mistral-7b) is a small model with the real architecture of that name (a
LlamaConfig / MistralConfig of a few hundred thousand parameters) and a byte-level BPE
tokenizer trained on the reference corpus (_corpus.py), both built from fixed seeds into
${NEXA_MODEL_CACHE:-~/.cache/nexa-forge/models}/<name>-<STAND_IN_VERSION>/ on first use, as
a Hugging Face model directory (config.json, model.safetensors, tokenizer files). The build
is atomic (a temp dir renamed into place), so handlers racing on it are safe. Any other
model name keeps the bigram behaviour of _lm.py; this module is imported only for these.

torch, transformers, peft, tokenizers, safetensors: handlers/requirements-ml.txt. The hub
is never contacted (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE are set before the import).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import tarfile
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import _corpus  # noqa: E402
import _forge as forge  # noqa: E402

STAND_IN_VERSION = "v1"
VOCAB_SIZE = 1024
BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
# The prompt/response layout the stand-ins are fine-tuned and served with (chat rows are
# rendered with it too): "<s>### User:\n{prompt}\n### Assistant:\n{completion}</s>".
USER_TAG, ASSISTANT_TAG = "### User:\n", "\n### Assistant:\n"
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'assistant' %}"
                 "{{ '\\n### Assistant:\\n' + m['content'] + eos_token }}{% else %}"
                 "{{ '### User:\\n' + m['content'] }}{% endif %}{% endfor %}"
                 "{% if add_generation_prompt %}{{ '\\n### Assistant:\\n' }}{% endif %}")

# name -> the real model's architecture and size, and the stand-in's shape.
STAND_INS = {
    "llama-3-8b": {
        "architecture": "LlamaForCausalLM", "real_parameters": 8_030_261_248,
        "config": dict(model_type="llama", hidden_size=64, intermediate_size=192,
                       num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                       max_position_embeddings=512, rope_theta=500000.0,
                       rms_norm_eps=1e-5, tie_word_embeddings=False),
        "seed": 3008,
    },
    "mistral-7b": {
        "architecture": "MistralForCausalLM", "real_parameters": 7_241_732_096,
        "config": dict(model_type="mistral", hidden_size=64, intermediate_size=224,
                       num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                       max_position_embeddings=512, rope_theta=10000.0, sliding_window=256,
                       rms_norm_eps=1e-5, tie_word_embeddings=False),
        "seed": 7007,
    },
}
# Target modules for LoRA, per architecture (attention and MLP projections).
LORA_TARGETS = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


def is_stand_in(name: object) -> bool:
    return isinstance(name, str) and name in STAND_INS


def cache_root() -> str:
    return os.environ.get("NEXA_MODEL_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "nexa-forge", "models")


def corpus_texts(n_per_domain: int = 300, seed: int = 20) -> list[str]:
    """The reference corpus the stand-in tokenizers are trained on: deterministic."""
    rng = random.Random(seed)
    texts = []
    for domain in sorted(_corpus.DOMAINS):
        for _ in range(n_per_domain):
            q, a = _corpus.sample(rng, domain, details=2)
            texts.append(USER_TAG + q + ASSISTANT_TAG + a)
    return texts


def _build_tokenizer(path: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, min_frequency=2, show_progress=False,
                                  special_tokens=[PAD, BOS, EOS, UNK],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus_texts(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS,
                                   pad_token=PAD, unk_token=UNK)
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)
    return fast


def _build(name: str, path: str) -> None:
    import torch
    import transformers

    spec = STAND_INS[name]
    tok = _build_tokenizer(path)
    cfg = dict(spec["config"])
    model_type = cfg.pop("model_type")
    config_cls = transformers.LlamaConfig if model_type == "llama" else transformers.MistralConfig
    config = config_cls(vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **cfg)
    torch.manual_seed(spec["seed"])
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(path, safe_serialization=True)
    meta = {"name": name, "architecture": spec["architecture"], "stand_in": True,
            "stand_in_version": STAND_IN_VERSION,
            "parameters": sum(p.numel() for p in model.parameters()),
            "real_parameters": spec["real_parameters"]}
    with open(os.path.join(path, "nexa.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2, sort_keys=True)


def stand_in_dir(name: str) -> str:
    """The stand-in's model directory, built on first use (atomically)."""
    root = cache_root()
    final = os.path.join(root, f"{name}-{STAND_IN_VERSION}")
    if os.path.isfile(os.path.join(final, "nexa.json")):
        return final
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}-", dir=root)
    try:
        forge.log(f"building the stand-in for {name} in {final}")
        _build(name, tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not os.path.isfile(os.path.join(final, "nexa.json")):
                raise  # not a lost race: a real failure
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def stand_in_meta(name: str) -> dict:
    with open(os.path.join(stand_in_dir(name), "nexa.json"), encoding="utf-8") as f:
        return json.load(f)


# ---- base models: fetched from the object store, or built here -------------------------


def base_entry(job: dict, key: str) -> dict:
    """The catalogue entry the gateway resolved params.<key> to (job["models"][key]) when
    it is a base model; {} otherwise."""
    models = job.get("models") if isinstance(job.get("models"), dict) else {}
    entry = models.get(key)
    return entry if isinstance(entry, dict) and entry.get("kind") == "base" else {}


def has_weights(job: dict, key: str = "model_id") -> bool:
    """params.<key> is a base model this worker has a Hugging Face directory for: the
    worker fetched it from the store (its catalogue source is s3://), or it is a stand-in
    (built here). Cheap: no torch import."""
    return isinstance(base_entry(job, key).get("local_dir"), str) or is_stand_in(
        job.get("params", {}).get(key))


def base_dir_of(job: dict, key: str = "model_id") -> tuple[str, str]:
    """(model directory, source) of params.<key> (has_weights must hold): the directory the
    worker fetched from the catalogue's s3:// source into its store cache
    (job["models"][key]["local_dir"]), else the stand-in built here
    ("builtin:stand-in/<name>")."""
    entry = base_entry(job, key)
    name = job.get("params", {}).get(key)
    local = entry.get("local_dir")
    if isinstance(local, str):
        if not os.path.isfile(os.path.join(local, "config.json")):
            forge.fail(f"params.{key}: the base model {name} fetched from "
                       f"{entry.get('source')} is not a Hugging Face model directory (no "
                       "config.json): the operator's catalogue names the wrong prefix",
                       forge.EXIT_RETRYABLE)
        return local, str(entry.get("source"))
    return stand_in_dir(name), f"builtin:stand-in/{name}"


def base_meta(job: dict, key: str, model_dir: str) -> dict:
    """name, architecture, stand_in, parameters, real_parameters of a base model dir: its
    nexa.json (a stand-in), else its config.json and the catalogue entry (any Hugging Face
    model directory a site put in the store). parameters may be None (counted on load)."""
    path = os.path.join(model_dir, "nexa.json")
    entry = base_entry(job, key)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
        if entry.get("stand_in") is not None:
            meta["stand_in"] = bool(meta.get("stand_in") or entry.get("stand_in"))
        return meta
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    archs = config.get("architectures") or [config.get("model_type") or "unknown"]
    return {"name": job.get("params", {}).get(key), "architecture": archs[0],
            "stand_in": bool(entry.get("stand_in")), "parameters": None,
            "real_parameters": entry.get("parameters")}


# ---- devices ------------------------------------------------------------------------


def device_and_dtype():
    """cuda (the GPUs CUDA_VISIBLE_DEVICES pins, set by the agent) with bf16 where the GPU
    has it, else cpu with float32."""
    import torch

    if torch.cuda.is_available():
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        return torch.device("cuda"), dtype
    return torch.device("cpu"), torch.float32


# ---- records -> (prompt, completion) -> token examples -----------------------------


def record_pair(rec: dict) -> tuple[str, str]:
    """(prompt, completion) of a record: chat `messages`, prompt/completion,
    instruction(+input)/response, or plain text (prompt ""). Raises ValueError saying why a
    record is none of these."""
    msgs = rec.get("messages")
    if msgs is not None:
        if not isinstance(msgs, list) or not msgs:
            raise ValueError("messages must be a non-empty list")
        for m in msgs:
            if (not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant")
                    or not isinstance(m.get("content"), str)):
                raise ValueError("each message needs a role (system, user, assistant) and a "
                                 "string content")
        if msgs[-1]["role"] != "assistant":
            raise ValueError("the last message must be the assistant's")
        prompt = "".join((USER_TAG if i == 0 else "") + _msg_text(m, i) for i, m in
                         enumerate(msgs[:-1]))
        return prompt, msgs[-1]["content"]
    for p_key, c_key in (("prompt", "completion"), ("instruction", "response"),
                         ("question", "answer")):
        if p_key in rec or c_key in rec:
            p, c = rec.get(p_key), rec.get(c_key)
            if not isinstance(p, str) or not isinstance(c, str) or not c.strip():
                raise ValueError(f"{p_key} and {c_key} must both be strings "
                                 f"({c_key} non-empty)")
            extra = rec.get("input")
            if p_key == "instruction" and isinstance(extra, str) and extra.strip():
                p = p + "\n" + extra
            return USER_TAG + p, c
    text = rec.get("text")
    if isinstance(text, str) and text.strip():
        return "", text
    raise ValueError("no messages, prompt/completion, instruction/response or text field")


def _msg_text(m, i):
    if m["role"] == "assistant":
        return ASSISTANT_TAG + m["content"] + "\n" + USER_TAG
    return m["content"] + ("\n" if m["role"] == "system" else "")


def encode_pair(tok, prompt: str, completion: str, max_len: int,
                train_on_inputs: bool) -> tuple[list[int], list[int]]:
    """(input_ids, labels): <s> prompt [### Assistant:\\n] completion </s>, cut to max_len;
    labels are -100 on the prompt unless train_on_inputs."""
    if prompt:
        p_ids = tok.encode(prompt + ASSISTANT_TAG, add_special_tokens=False)
    else:
        p_ids = []
    c_ids = tok.encode(completion, add_special_tokens=False) + [tok.eos_token_id]
    ids = [tok.bos_token_id] + p_ids + c_ids
    labels = (list(ids) if train_on_inputs else [-100] * (1 + len(p_ids)) + c_ids)
    return ids[:max_len], labels[:max_len]


def read_pairs(dataset: forge.Dataset, limit: int = 200_000) -> list[tuple[str, str]]:
    """(prompt, completion) of every record, read before any model is loaded, so a
    malformed line/row exits 2 naming it at once."""
    out = []
    for row in dataset.rows():
        if row.error:
            forge.fail(f"params.{dataset.key}: {row.where}: {row.error}")
        try:
            out.append(record_pair(row.record))
        except ValueError as exc:
            forge.fail(f"params.{dataset.key}: {row.where}: {exc}")
        if len(out) >= limit:
            forge.log(f"using the first {limit} records of {dataset.uri}")
            break
    return out


def encode_pairs(tok, pairs: list[tuple[str, str]], max_len: int,
                 train_on_inputs: bool) -> list[tuple[list[int], list[int]]]:
    """Token examples (input_ids, labels) of the pairs that keep a labelled token."""
    out = []
    for prompt, completion in pairs:
        ids, labels = encode_pair(tok, prompt, completion, max_len, train_on_inputs)
        if any(x != -100 for x in labels[1:]):
            out.append((ids, labels))
    return out


def collate(batch: list[tuple[list[int], list[int]]], pad_id: int, device):
    import torch

    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (x, y) in enumerate(batch):
        ids[i, :len(x)] = torch.tensor(x)
        labels[i, :len(y)] = torch.tensor(y)
        mask[i, :len(x)] = 1
    return ids.to(device), labels.to(device), mask.to(device)


def token_nll(model, ids, labels, mask) -> tuple:
    """(summed negative log-likelihood of the labelled tokens, their count)."""
    import torch

    logits = model(input_ids=ids, attention_mask=mask).logits.float()
    logits, target = logits[:, :-1, :], labels[:, 1:]
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)),
                                            target.reshape(-1), ignore_index=-100,
                                            reduction="sum")
    return nll, int((target != -100).sum())


def mean_loss(model, examples: list, batch_size: int, pad_id: int,
              device) -> tuple[float, int]:
    """Mean per-token loss over examples (no grad) and the tokens the model processed."""
    import torch

    total, count, processed = 0.0, 0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            batch = examples[i:i + batch_size]
            ids, labels, mask = collate(batch, pad_id, device)
            nll, n = token_nll(model, ids, labels, mask)
            total += float(nll)
            count += n
            processed += sum(len(x) for x, _ in batch)
    model.train(was_training)
    return (total / count if count else float("nan")), processed


# ---- model.tar ----------------------------------------------------------------------


def pack_dir(src: str, tar_path: str) -> int:
    """src's files as a tar (names relative to src, sorted, fixed metadata), atomically."""
    tmp = tar_path + ".tmp"
    with tarfile.open(tmp, "w") as tar:
        for name in sorted(os.listdir(src)):
            info = tar.gettarinfo(os.path.join(src, name), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            with open(os.path.join(src, name), "rb") as f:
                tar.addfile(info, f)
    os.replace(tmp, tar_path)
    return os.path.getsize(tar_path)


def unpack_model(path: str, key: str = "model_id") -> str:
    """A model.tar (written by train, or a user's uploaded Hugging Face directory)
    unpacked into a private dir of the job's directory (the parent of NF_ARTIFACT_DIR);
    returns that dir. Exits 2 when it is not one."""
    base = os.path.dirname(os.path.abspath(forge.artifact_dir()))
    dest = tempfile.mkdtemp(prefix="model-", dir=base)
    try:
        with tarfile.open(path) as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as exc:
        forge.fail(f"params.{key}: not a model.tar written by train: {exc}")
    if not os.path.isfile(os.path.join(dest, "nexa.json")):
        uploaded_meta(dest, key)
    return dest


def uploaded_meta(model_dir: str, key: str) -> None:
    """A user's Hugging Face model directory (POST /api/models checked its structure):
    our nexa.json written from its config.json, so it loads like train's output."""
    try:
        with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
        arch = config["model_type"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        forge.fail(f"params.{key}: the model.tar holds neither nexa.json (written by train) "
                   f"nor a Hugging Face config.json with a model_type: {exc}")
    meta = {"name": None, "architecture": arch, "stand_in": False, "base_model": None,
            "method": "uploaded"}
    with open(os.path.join(model_dir, "nexa.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f)


def load_for_inference(model_dir: str, device, dtype, meta: dict | None = None) -> tuple:
    """(model, tokenizer, meta) of a base model dir or an unpacked model.tar: a merged
    or full model loads directly; an adapter loads on its base stand-in. meta: the base's
    (base_meta), else the dir's nexa.json."""
    import transformers

    if meta is None and not os.path.isfile(os.path.join(model_dir, "nexa.json")):
        meta = base_meta({"params": {"model_id": None}}, "model_id", model_dir)  # a site's
    if meta is None:
        with open(os.path.join(model_dir, "nexa.json"), encoding="utf-8") as f:
            meta = json.load(f)
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    if os.path.isfile(os.path.join(model_dir, "model.safetensors")) or \
            os.path.isfile(os.path.join(model_dir, "model.safetensors.index.json")):
        model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    else:
        from peft import PeftModel

        base = meta.get("base_model")
        if not is_stand_in(base):
            forge.fail(f"params.model_id: the adapter's base model {base!r} is not available "
                       "on this worker")
        model = transformers.AutoModelForCausalLM.from_pretrained(stand_in_dir(base),
                                                                  dtype=dtype)
        model = PeftModel.from_pretrained(model, model_dir)
    model.to(device)
    model.eval()
    return model, tok, meta


def quiet_stderr_warnings():
    import warnings

    warnings.filterwarnings("ignore")
    try:
        import transformers

        transformers.logging.set_verbosity_error()
    except ImportError:
        pass


def require_ml() -> None:
    """Exits 75 (a worker fault: retried elsewhere) when the ML runtime is missing."""
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        forge.fail(f"this worker's Python lacks the ML runtime ({exc}); install "
                   "handlers/requirements-ml.txt", forge.EXIT_RETRYABLE)
    quiet_stderr_warnings()
