"""train for the stand-in bases (_hf.STAND_INS): supervised fine-tuning with PyTorch +
transformers + peft. handlers/train calls main(job) when params.model_id names one.

params: model_id, dataset_uri, validation_uri (or validation_split, default 0.1), method
(lora (default) | full; the older `lora: false` means full), lora_r (8), lora_alpha (16),
lora_dropout (0.05), epochs (3), batch_size (8), learning_rate (1e-2 for lora, 3e-3 for
full, tuned for the stand-ins; times learning_rate_multiplier), warmup_ratio (0.1),
max_seq_length (128), seed, train_on_inputs (false: the loss is on the completion tokens only), merge (false),
metric_every (10 steps), early_stopping_patience (optional, >= 1, needs validation data:
stop once the validation loss has not improved for that many epochs; the output model is
the best epoch's (keep-best); the result says stopped_early and best_epoch).

Stdout: {"metric": {step, epoch, train_loss, valid_loss, learning_rate, tokens_per_s}} every
metric_every steps and at each epoch's end (valid_loss only there), and a {"log"} summary
per epoch. A checkpoint per epoch, checkpoint-epoch-<n>.tar (kind checkpoint: trainable
weights in safetensors, optimizer, scheduler and RNG state), announced as soon as it is
written (the agent uploads and records it during the run); NF_RESUME_DIR (set by the agent
on a retried attempt: the job's newest checkpoint), when set and holding one (unpacked, or
the .tar), resumes after its epoch and reproduces the uninterrupted run bit for bit on the
same device. from_checkpoint (artifact://art_..., a checkpoint of the same base model and
method, fetched as inputs.from_checkpoint) starts a NEW run from its weights and optimizer
moments: this job then trains its own `epochs` epochs (numbered from 1) with its own
learning rate and schedule, as fine-tuning a fine-tuned model or checkpoint does on
OpenAI (HF Trainer's resume_from_checkpoint, which counts on, is what a retry does).
Output: model.tar (kind model: the
adapter, or for full / merge the whole model, with the tokenizer and nexa.json) and
metrics.json (kind metrics). Usage: input_tokens = every token the model processed (the
training tokens x epochs, plus every validation pass).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import tarfile
import tempfile
import time

import _ddp
import _forge as forge
import _hf as hf

CKPT_STATE = "trainer_state.json"


def params_of(job: dict) -> dict:
    p = job["params"]
    method = p.get("method")
    if method is None:
        method = "full" if p.get("lora") is False else "lora"
    if method not in ("lora", "full"):
        forge.fail("params.method must be lora or full")
    # Tuned for the stand-ins (randomly initialised, a few hundred thousand parameters);
    # fine-tuning real 7-8B weights wants about 2e-4 (lora) / 2e-5 (full): pass it.
    lr_default = 1e-2 if method == "lora" else 3e-3
    lr = forge.float_param(p, "learning_rate", default=lr_default, lo=0.0, hi=1.0)
    lr *= forge.float_param(p, "learning_rate_multiplier", default=1.0, lo=0.0, hi=100.0)
    split = p.get("validation_split", 0.1)
    if isinstance(split, bool) or not isinstance(split, (int, float)) or not 0 <= split < 1:
        forge.fail("params.validation_split must be a number in [0, 1)")
    return {
        "model_id": p["model_id"], "method": method,
        "lora_r": forge.int_param(p, "lora_r", default=8, lo=1, hi=1024),
        "lora_alpha": forge.float_param(p, "lora_alpha", default=16.0, lo=0.0, hi=1e6),
        "lora_dropout": _rate(p, "lora_dropout", 0.05),
        "epochs": forge.int_param(p, "epochs", default=3, lo=1, hi=100),
        "batch_size": forge.int_param(p, "batch_size", default=8, lo=1, hi=4096),
        "learning_rate": lr,
        "warmup_ratio": _rate(p, "warmup_ratio", 0.1),
        "max_seq_length": forge.int_param(p, "max_seq_length", default=128, lo=8, hi=512),
        "seed": forge.seed_for(job, p, ":train"),
        "train_on_inputs": forge.bool_param(p, "train_on_inputs", default=False),
        "merge": forge.bool_param(p, "merge", default=False),
        "validation_split": float(split),
        "metric_every": forge.int_param(p, "metric_every", default=10, lo=1, hi=1_000_000),
        "early_stopping_patience": forge.int_param(p, "early_stopping_patience", default=None,
                                                   lo=1, hi=100),
    }


def _rate(p, key, default):
    v = p.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
        forge.fail(f"params.{key} must be a number in [0, 1)")
    return float(v)


def emit_metric(**m):
    forge.emit({"metric": {k: (round(v, 6) if isinstance(v, float) else v)
                           for k, v in m.items()}})


# ---- checkpoints --------------------------------------------------------------------


def trainable_state(model):
    return {k: v.detach().cpu().contiguous() for k, v in model.named_parameters()
            if v.requires_grad}


def save_checkpoint(out: str, epoch: int, model, opt, sched, state: dict) -> str:
    """checkpoint-epoch-<epoch>.tar in out: weights.safetensors, optimizer.pt,
    scheduler.pt, rng.pt, trainer_state.json; written atomically."""
    import torch
    from safetensors.torch import save_file

    tmp = tempfile.mkdtemp(prefix=".ckpt-", dir=out)
    try:
        save_file(trainable_state(model), os.path.join(tmp, "weights.safetensors"))
        torch.save(opt.state_dict(), os.path.join(tmp, "optimizer.pt"))
        torch.save(sched.state_dict(), os.path.join(tmp, "scheduler.pt"))
        rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(rng, os.path.join(tmp, "rng.pt"))
        with open(os.path.join(tmp, CKPT_STATE), "w", encoding="utf-8") as f:
            json.dump(state, f, indent=2, sort_keys=True)
        name = f"checkpoint-epoch-{epoch}.tar"
        hf.pack_dir(tmp, os.path.join(out, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return name


def _unpack(path: str, label: str, code: int) -> str:
    """A checkpoint-epoch-<n>.tar unpacked into a temp dir of the job's directory."""
    dest = tempfile.mkdtemp(prefix="resume-", dir=os.path.dirname(forge.artifact_dir()))
    try:
        with tarfile.open(path) as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as exc:
        forge.fail(f"{label}: {os.path.basename(path)} is not a readable checkpoint: {exc}", code)
    if not os.path.isfile(os.path.join(dest, CKPT_STATE)):
        forge.fail(f"{label}: {os.path.basename(path)} is not a train checkpoint (no "
                   f"{CKPT_STATE})", code)
    return dest


def find_resume(resume_dir: str | None) -> str | None:
    """The newest checkpoint in NF_RESUME_DIR: a dir holding trainer_state.json (itself or
    a subdir), or a checkpoint-epoch-<n>.tar; unpacked into a temp dir. None if none."""
    if not resume_dir or not os.path.isdir(resume_dir):
        return None
    found = []  # (epoch, kind, path)
    for root, _dirs, files in os.walk(resume_dir):
        if CKPT_STATE in files:
            with open(os.path.join(root, CKPT_STATE), encoding="utf-8") as f:
                found.append((json.load(f)["epoch"], "dir", root))
        for name in files:
            if name.startswith("checkpoint-epoch-") and name.endswith(".tar"):
                try:
                    found.append((int(name[17:-4]), "tar", os.path.join(root, name)))
                except ValueError:
                    pass
    if not found:
        return None
    _epoch, kind, path = max(found)
    if kind == "dir":
        return path
    return _unpack(path, "NF_RESUME_DIR", forge.EXIT_RETRYABLE)


def from_checkpoint_dir(job: dict) -> str | None:
    """params.from_checkpoint (artifact://art_..., a checkpoint of the caller, resolved by
    the gateway into inputs.from_checkpoint: the .tar the worker fetched), unpacked."""
    uri = job["params"].get("from_checkpoint")
    if uri is None:
        return None
    path = forge.input_path(job, "from_checkpoint", uri)
    return _unpack(path, "params.from_checkpoint", forge.EXIT_BAD_PARAMS)


def read_state(path: str) -> dict:
    with open(os.path.join(path, CKPT_STATE), encoding="utf-8") as f:
        return json.load(f)


def load_checkpoint(path: str, model, opt, sched, label: str = "NF_RESUME_DIR",
                    full: bool = True) -> dict:
    """Loads the trainable weights and the optimizer state of the checkpoint at path;
    full: also the scheduler and RNG state (a retry resuming its own run). Otherwise (a
    new job continuing from it) only the optimizer's moments: this job's learning rate
    and schedule stay. A checkpoint of another model fails naming label."""
    import torch
    from safetensors.torch import load_file

    weights = load_file(os.path.join(path, "weights.safetensors"))
    missing = [k for k, v in model.named_parameters() if v.requires_grad and k not in weights]
    if missing:
        forge.fail(f"{label}: the checkpoint does not match this job's model "
                   f"({len(missing)} trainable tensors missing, e.g. {missing[0]})")
    try:
        model.load_state_dict(weights, strict=False)
    except RuntimeError as exc:
        forge.fail(f"{label}: the checkpoint does not match this job's model "
                   f"({str(exc).splitlines()[-1].strip()})")
    saved = torch.load(os.path.join(path, "optimizer.pt"), weights_only=False)
    if full:
        opt.load_state_dict(saved)
        sched.load_state_dict(torch.load(os.path.join(path, "scheduler.pt"),
                                         weights_only=False))
        rng = torch.load(os.path.join(path, "rng.pt"), weights_only=False)
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
    else:
        cur = opt.state_dict()
        n_saved = sum(len(g["params"]) for g in saved["param_groups"])
        n_cur = sum(len(g["params"]) for g in cur["param_groups"])
        if n_saved != n_cur:
            forge.fail(f"{label}: the checkpoint's optimizer holds {n_saved} tensors, this "
                       f"job's {n_cur}: not the same model and method")
        cur["state"] = saved["state"]
        opt.load_state_dict(cur)  # the moments; this job's lr and schedule
    return read_state(path)


# ---- early stopping -----------------------------------------------------------------


def optimizer_step(model, opt, sched, loss) -> None:
    """One optimizer step on loss: gradients from it alone, clipped to norm 1.0, then the
    learning-rate schedule's step (the trainer of train and distill's logits method)."""
    import torch

    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()


def hf_trainable_copy(model) -> dict:
    """The trainable tensors (what a checkpoint holds), copied to the CPU."""
    return {k: v.clone() for k, v in trainable_state(model).items()}


def _best_weights_at_resume(early: dict, state: dict, model):
    """The best epoch's weights when resuming: the resumed weights when that epoch was the
    best; else its checkpoint-epoch-<n>.tar if NF_RESUME_DIR holds it too. Without it the
    resumed epoch becomes the best so far (logged): its weights are the ones at hand."""
    best, resumed_epoch = early.get("best_epoch"), state["epoch"]
    if best is None or best == resumed_epoch:
        return hf_trainable_copy(model) if best is not None else None
    resume_dir = os.environ.get("NF_RESUME_DIR") or ""
    for root, _dirs, files in os.walk(resume_dir):
        if f"checkpoint-epoch-{best}.tar" in files:
            from safetensors.torch import load
            with tarfile.open(os.path.join(root, f"checkpoint-epoch-{best}.tar")) as tar:
                member = tar.extractfile("weights.safetensors")
                if member is not None:
                    return load(member.read())
    forge.log(f"early stopping: the weights of the best epoch {best} are not in "
              f"NF_RESUME_DIR; the resumed epoch {resumed_epoch} counts as the best so far")
    early.update({"best_epoch": resumed_epoch, "bad_epochs": 0,
                  "best_loss": state["history"]["valid_loss"][-1]})
    return hf_trainable_copy(model)


# ---- the run ------------------------------------------------------------------------


def _ddp_step_loss(dp, train_model, batch, pad, device, amp):
    """One data-parallel step's loss on this rank's shard of the global batch: its summed
    NLL x world / the global batch's labelled tokens, so DDP's gradient average is the
    single-process gradient (_ddp.py). -> (loss, the global summed NLL, labelled tokens,
    tokens processed: the global batch's, as the single-process run counts them)."""
    mine, weight = _ddp.shard(dp, batch), 1.0
    if not mine:  # fewer items than ranks: a zero-weight pass keeps DDP's collectives in step
        mine, weight = batch[:1], 0.0
    ids, labels, mask = hf.collate(mine, pad, device)
    with amp:
        nll, n = hf.token_nll(train_model, ids, labels, mask)
    g_nll, g_n = _ddp.all_sum(dp, [float(nll) * weight, n * weight], device)
    loss = nll * (weight * dp.world / max(1.0, g_n))
    return loss, g_nll, int(g_n), sum(len(x) for x, _ in batch)



def main(job: dict) -> None:
    P = params_of(job)
    name = P["model_id"]
    out = forge.artifact_dir()
    dataset = forge.open_dataset(job, "dataset_uri")
    validation = forge.open_dataset(job, "validation_uri", required=False)
    train_pairs = hf.read_pairs(dataset)
    valid_pairs = hf.read_pairs(validation) if validation is not None else None
    resume = find_resume(os.environ.get("NF_RESUME_DIR"))
    cont = from_checkpoint_dir(job) if resume is None else None
    cont_state = read_state(cont) if cont is not None else None
    if cont_state is not None and (cont_state.get("model_id"), cont_state.get("method")) != (
            name, P["method"]):
        forge.fail(f"params.from_checkpoint: the checkpoint is of {cont_state.get('model_id')} "
                   f"({cont_state.get('method')}), this job trains {name} ({P['method']}): "
                   "continue from a checkpoint of the same base model and method")

    hf.require_ml()
    import torch
    import transformers

    device, dtype = hf.device_and_dtype()
    # the base (built or fetched) once, here, before any other rank starts
    base_dir, base_source = hf.base_dir_of(job, "model_id")
    # gpu_count > 1 (or NF_DDP_CPU_RANKS): data-parallel ranks (_ddp.py); this process is
    # rank 0 and alone writes protocol lines, checkpoints and outputs
    dp = _ddp.setup(job, device.type == "cuda",
                    torch.cuda.device_count() if device.type == "cuda" else 0)
    if dp.active:
        device = dp.device
    meta = hf.base_meta(job, "model_id", base_dir)
    tok = transformers.AutoTokenizer.from_pretrained(base_dir)
    train = hf.encode_pairs(tok, train_pairs, P["max_seq_length"], P["train_on_inputs"])
    if validation is not None:
        valid = hf.encode_pairs(tok, valid_pairs, P["max_seq_length"], P["train_on_inputs"])
        if not valid:
            forge.fail("params.validation_uri: no records with completion text")
    elif P["validation_split"] > 0 and len(train) >= 2:
        order = list(range(len(train)))
        random.Random(P["seed"]).shuffle(order)
        cut = max(1, int(round(len(train) * P["validation_split"])))
        valid = [train[i] for i in sorted(order[:cut])]
        train = [train[i] for i in sorted(order[cut:])]
    else:
        valid = []
    if not train:
        forge.fail("params.dataset_uri: no records with completion text to train on")
    patience = P["early_stopping_patience"]
    if patience is not None and not valid:
        forge.fail("params.early_stopping_patience needs validation data: give validation_uri "
                   "or validation_split (and at least two records)")
    forge.log(f"base model {name}: {meta['architecture']}"
              f"{' stand-in' if meta.get('stand_in') else ''} from {base_source}")
    forge.log(f"fine-tuning the {meta['architecture']} {name} ({P['method']}) on "
              f"{len(train)} examples, {len(valid)} held out, on {device} ({dtype})")
    if dp.active:
        forge.log(f"data-parallel over {dp.world} ranks ({dp.backend}): the effective batch "
                  f"is batch_size={P['batch_size']}, about {math.ceil(P['batch_size'] / dp.world)}"
                  " per rank; steps, learning rate and schedule are the single-process run's")

    torch.manual_seed(P["seed"])
    random.seed(P["seed"])
    # Weights and optimizer state stay float32; on a GPU with bf16 the forward passes run
    # under autocast (mixed precision), so LoRA and full training keep fp32 master weights.
    model = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    amp = (torch.autocast(device_type="cuda", dtype=dtype) if device.type == "cuda"
           and dtype != torch.float32 else contextlib.nullcontext())
    model.to(device)
    arch = model.config.model_type
    if meta.get("parameters") is None:  # a site's model without our nexa.json
        meta["parameters"] = sum(p.numel() for p in model.parameters())
    if P["method"] == "lora":
        from peft import LoraConfig, get_peft_model

        lcfg = LoraConfig(r=P["lora_r"], lora_alpha=P["lora_alpha"],
                          lora_dropout=P["lora_dropout"], target_modules=hf.LORA_TARGETS.get(arch, "all-linear"),
                          task_type="CAUSAL_LM")
        model = get_peft_model(model, lcfg)
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    bs = P["batch_size"]
    steps_per_epoch = math.ceil(len(train) / bs)
    total_steps = steps_per_epoch * P["epochs"]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                            lr=P["learning_rate"], weight_decay=0.0)
    sched = transformers.get_linear_schedule_with_warmup(
        opt, int(P["warmup_ratio"] * total_steps), total_steps)

    pad = tok.pad_token_id
    train_tokens = sum(len(x) for x, _ in train)
    processed = 0
    history = {"train_loss": [], "valid_loss": []}
    start_epoch, step = 1, 0
    valid_before = None
    continued = None
    if resume is not None:
        state = load_checkpoint(resume, model, opt, sched)
        start_epoch, step = state["epoch"] + 1, state["step"]
        history, valid_before = state["history"], state.get("valid_loss_before")
        processed = state["tokens_processed"]
        continued = state.get("from_checkpoint")  # a retry of a from_checkpoint job
        forge.log(f"resumed from the checkpoint of epoch {state['epoch']} (step {step}); "
                  f"the first step is {step + 1}")
    elif cont is not None:
        # A new job continuing an earlier one: its weights and optimizer moments, then
        # this job's own `epochs` epochs (numbered from 1) with its own learning-rate
        # schedule, as fine-tuning a fine-tuned model or checkpoint does on OpenAI.
        state = load_checkpoint(cont, model, opt, sched, "params.from_checkpoint", full=False)
        continued = {"uri": job["params"]["from_checkpoint"], "epoch": state["epoch"],
                     "step": state["step"], "job_id": state.get("job_id")}
        forge.log(f"continuing from {continued['uri']} (epoch {state['epoch']}, step "
                  f"{state['step']}"
                  + (f" of {state['job_id']}" if state.get("job_id") else "") + ")")
    if resume is None and valid:
        with amp:
            valid_before, n = _ddp.mean_loss(dp, model, valid, bs, pad, device)
        processed += n
        emit_metric(step=0, epoch=0, valid_loss=valid_before)

    # Early stopping (keep-best): the best validation loss so far, its epoch and weights
    # (the trainable tensors, on the CPU), and the epochs since it improved.
    early = {"best_loss": None, "best_epoch": None, "bad_epochs": 0}
    best_weights = None
    stopped_early = False
    if resume is not None and patience is not None:
        early = state.get("early_stopping") or early
        best_weights = _best_weights_at_resume(early, state, model)

    tick = forge.Progress()
    model.train()
    train_model = _ddp.wrap(dp, model)  # model itself without data parallelism
    if dp.rank > 0:  # dropout masks of its own per rank (rank 0 keeps the run's stream)
        torch.manual_seed(P["seed"] + 1009 * dp.rank + start_epoch)
    epoch = start_epoch - 1
    for epoch in range(start_epoch, P["epochs"] + 1):
        order = torch.randperm(len(train),
                               generator=torch.Generator().manual_seed(P["seed"] + epoch))
        ep_nll, ep_n, win_nll, win_n, win_tok, win_t = 0.0, 0, 0.0, 0, 0, time.monotonic()
        for b in range(steps_per_epoch):
            batch = [train[i] for i in order[b * bs:(b + 1) * bs].tolist()]
            if dp.active:
                loss, nll, n, ntok = _ddp_step_loss(dp, train_model, batch, pad, device, amp)
            else:
                ids, labels, mask = hf.collate(batch, pad, device)
                with amp:
                    nll, n = hf.token_nll(model, ids, labels, mask)
                loss = nll / max(1, n)
                ntok = int(mask.sum())
            optimizer_step(model, opt, sched, loss)
            step += 1
            processed += ntok
            ep_nll += float(nll)
            ep_n += n
            win_nll += float(nll)
            win_n += n
            win_tok += ntok
            if step % P["metric_every"] == 0:
                dt = max(1e-9, time.monotonic() - win_t)
                emit_metric(step=step, epoch=round(epoch - 1 + (b + 1) / steps_per_epoch, 4),
                            train_loss=win_nll / max(1, win_n),
                            learning_rate=sched.get_last_lr()[0], tokens_per_s=win_tok / dt)
                win_nll, win_n, win_tok, win_t = 0.0, 0, 0, time.monotonic()
            tick(step / total_steps * 0.95)
        train_loss = ep_nll / max(1, ep_n)
        history["train_loss"].append(round(train_loss, 6))
        valid_loss = None
        if valid:
            with amp:
                valid_loss, n = _ddp.mean_loss(dp, model, valid, bs, pad, device)
            processed += n
            history["valid_loss"].append(round(valid_loss, 6))
        emit_metric(step=step, epoch=epoch, train_loss=train_loss, valid_loss=valid_loss,
                    learning_rate=sched.get_last_lr()[0])
        forge.log(f"epoch {epoch}/{P['epochs']}: train_loss={train_loss:.4f}"
                  + (f" valid_loss={valid_loss:.4f}" if valid_loss is not None else "")
                  + f" step={step}")
        if patience is not None:
            if early["best_loss"] is None or valid_loss < early["best_loss"]:
                early = {"best_loss": valid_loss, "best_epoch": epoch, "bad_epochs": 0}
                best_weights = hf_trainable_copy(model)
            else:
                early["bad_epochs"] += 1
                stopped_early = early["bad_epochs"] >= patience and epoch < P["epochs"]
        state = {"epoch": epoch, "step": step, "history": history, "tokens_processed":
                 processed, "valid_loss_before": valid_before, "model_id": name,
                 "method": P["method"], "job_id": forge.job_id(job),
                 "from_checkpoint": continued}
        if patience is not None:
            state["early_stopping"] = dict(early)
        # Announced at once: the agent uploads it while training goes on and records it,
        # so a retry of this attempt resumes from it even if the worker dies meanwhile.
        # epoch and step ride along (additive keys): GET /api/jobs/{id}/checkpoints.
        if dp.main:  # the weights are the same on every rank
            ckpt = save_checkpoint(out, epoch, model, opt, sched, state)
            forge.emit({"artifact": {"path": ckpt, "kind": "checkpoint", "epoch": epoch,
                                     "step": step}})
        if stopped_early:
            forge.log(f"early stopping after epoch {epoch}: the validation loss has not "
                      f"improved for {patience} epoch(s); keeping epoch {early['best_epoch']} "
                      f"(valid_loss={early['best_loss']:.4f})")
            break
    last_epoch = epoch
    _ddp.finish(dp)
    if not dp.main:
        return  # rank 0 writes the outputs
    if patience is not None and early["best_epoch"] != last_epoch and best_weights is not None:
        model.load_state_dict(best_weights, strict=False)  # keep-best

    # The output model directory, packed as model.tar.
    mdir = tempfile.mkdtemp(prefix=".model-", dir=out)
    merged = P["method"] == "full" or P["merge"]
    final = model
    if P["method"] == "lora":
        if merged:
            final = model.merge_and_unload()
        else:
            model.save_pretrained(mdir, safe_serialization=True)
    if merged:
        final.save_pretrained(mdir, safe_serialization=True)
    tok.save_pretrained(mdir)
    out_meta = {"base_model": name, "architecture": meta["architecture"],
                "stand_in": bool(meta.get("stand_in")), "base_source": base_source,
                "method": P["method"], "merged": merged, "parameters": meta["parameters"],
                "real_parameters": meta.get("real_parameters"),
                "trainable_parameters": n_trainable, "train_on_inputs": P["train_on_inputs"], "job_id": forge.job_id(job)}
    with open(os.path.join(mdir, "nexa.json"), "w", encoding="utf-8") as f:
        json.dump(out_meta, f, indent=2, sort_keys=True)
    size = hf.pack_dir(mdir, os.path.join(out, "model.tar"))
    shutil.rmtree(mdir, ignore_errors=True)

    res = {"model_id": name, "base_model": name, "stand_in": bool(meta.get("stand_in")),
           "base_source": base_source,
           "architecture": meta["architecture"], "parameters": meta["parameters"],
           "real_parameters": meta.get("real_parameters"), "trainable_parameters": n_trainable,
           "loaded_parameters": n_params, "method": P["method"], "merged": merged,
           "epochs": P["epochs"], "steps": step, "batch_size": bs,
           "learning_rate": P["learning_rate"],
           "final_loss": history["valid_loss"][-1] if history["valid_loss"]
           else history["train_loss"][-1],
           "train_loss": history["train_loss"][-1],
           "valid_loss": history["valid_loss"][-1] if history["valid_loss"] else None,
           "valid_loss_before": valid_before, "loss_by_epoch": history,
           "train_examples": len(train), "valid_examples": len(valid),
           "tokens": train_tokens, "tokens_processed": processed, "device": str(device),
           "dtype": "float32" + ("" if device.type == "cpu" else
                                 " weights, " + str(dtype).replace("torch.", "") + " autocast"),
           "bytes": size,
           "resumed_from_epoch": start_epoch - 1 if resume is not None else None,
           "from_checkpoint": continued}
    if dp.active:
        res["data_parallel"] = {"world_size": dp.world, "backend": dp.backend,
                                "effective_batch_size": bs,
                                "per_rank_batch_size": math.ceil(bs / dp.world)}
    if patience is not None:
        res.update({"early_stopping_patience": patience, "stopped_early": stopped_early,
                    "best_epoch": early["best_epoch"],
                    "best_valid_loss": round(early["best_loss"], 6),
                    "epochs_run": last_epoch})
    forge.write_json(os.path.join(out, "metrics.json"), res)
    forge.progress(1.0)
    forge.usage(input_tokens=processed)
    forge.artifact("model.tar", "model")
    forge.artifact("metrics.json", "metrics")
    forge.result(res)
