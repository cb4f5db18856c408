"""distill method "logits": the student learns the teacher's token distributions.

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
           + (1 - alpha) * cross-entropy(student, the teacher's answer tokens)

on the answer tokens only (Hinton et al. 2015). Needs the teacher's logits, so only a local
teacher (a stand-in or the account's model, _providers.LocalChat) whose tokenizer is the
student's. LoRA on the student (the defaults of train: r 8, alpha 16, every projection),
AdamW with linear decay; output student/model.tar in train's layout (adapter + tokenizer +
nexa.json), so evaluate and deploy take it as they take train's.
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile

import _forge as forge
import _hf as hf
from _sft import optimizer_step


def check_teacher(teacher, student: str) -> None:
    """Exits 2 naming params.method unless the teacher is local and shares the student's
    tokenizer."""
    hf_dir = getattr(teacher, "hf_dir", None)
    if hf_dir is None:
        forge.fail("params.method: logits needs a teacher run on this worker (a stand-in or "
                   f"one of your models); {teacher.label} is a {teacher.kind} that gives "
                   "no token distributions: use method sequence")
    import transformers

    t_vocab = transformers.AutoTokenizer.from_pretrained(hf_dir).get_vocab()
    s_vocab = transformers.AutoTokenizer.from_pretrained(hf.stand_in_dir(student)).get_vocab()
    if t_vocab != s_vocab:
        forge.fail(f"params.method: logits needs a teacher with the student's tokenizer; "
                   f"{teacher.label} and {student} tokenize differently: use method sequence")


def train(job, teacher, student, kept, heldout, P, coll, tick) -> dict:
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model

    p = job["params"]
    epochs = forge.int_param(p, "epochs", default=3, lo=1, hi=100)
    bs = forge.int_param(p, "batch_size", default=8, lo=1, hi=4096)
    lr = forge.float_param(p, "learning_rate", default=1e-2, lo=0.0, hi=1.0)
    max_len = forge.int_param(p, "max_seq_length", default=128, lo=8, hi=512)
    T, alpha = P["kd_temperature"], P["kd_alpha"]
    device, _dtype = hf.device_and_dtype()
    base_dir = hf.stand_in_dir(student)
    meta = hf.stand_in_meta(student)
    tok = transformers.AutoTokenizer.from_pretrained(base_dir)

    def examples(rows):
        pairs = [hf.record_pair(r) for r in rows]
        return hf.encode_pairs(tok, pairs, max_len, False)

    train_ex, held_ex = examples(kept), examples(heldout)
    if not train_ex:
        forge.fail("params.dataset_uri: no teacher answers with tokens to train on")
    torch.manual_seed(P["seed"])
    random.seed(P["seed"])
    model = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model.to(device)
    model = get_peft_model(model, LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.05, task_type="CAUSAL_LM",
        target_modules=hf.LORA_TARGETS[model.config.model_type]))
    tmodel = teacher.gen.model
    tmodel.eval()
    pad = tok.pad_token_id
    before = hf.mean_loss(model, held_ex, bs, pad, device)[0] if held_ex else None
    steps = math.ceil(len(train_ex) / bs) * epochs
    opt = torch.optim.AdamW([x for x in model.parameters() if x.requires_grad], lr=lr)
    sched = transformers.get_linear_schedule_with_warmup(opt, int(0.1 * steps), steps)
    step, processed, history = 0, 0, []
    model.train()
    for epoch in range(1, epochs + 1):
        order = list(range(len(train_ex)))
        random.Random(P["seed"] + epoch).shuffle(order)
        total, count = 0.0, 0
        for b in range(0, len(order), bs):
            batch = [train_ex[i] for i in order[b:b + bs]]
            ids, labels, mask = hf.collate(batch, pad, device)
            s_logits = model(input_ids=ids, attention_mask=mask).logits.float()[:, :-1]
            with torch.no_grad():
                t_logits = tmodel(input_ids=ids, attention_mask=mask).logits.float()[:, :-1]
            target = labels[:, 1:]
            sel = target != -100
            s_sel, t_sel = s_logits[sel], t_logits[sel]
            kl = torch.nn.functional.kl_div(
                torch.log_softmax(s_sel / T, -1), torch.log_softmax(t_sel / T, -1),
                log_target=True, reduction="batchmean") * T * T
            ce = torch.nn.functional.cross_entropy(s_sel, target[sel])
            loss = alpha * kl + (1 - alpha) * ce
            optimizer_step(model, opt, sched, loss)
            step += 1
            processed += int(mask.sum()) * 2  # the student and the teacher each read it
            total += float(loss) * int(sel.sum())
            count += int(sel.sum())
            tick(0.6 + 0.38 * step / steps)
        history.append(round(total / max(1, count), 6))
        forge.log(f"epoch {epoch}/{epochs}: kd_loss={history[-1]:.4f} step={step}")
    after = hf.mean_loss(model, held_ex, bs, pad, device)[0] if held_ex else None

    out = forge.artifact_dir()
    sdir = os.path.join(out, "student")
    os.makedirs(sdir, exist_ok=True)
    mdir = tempfile.mkdtemp(prefix=".model-", dir=sdir)
    model.save_pretrained(mdir, safe_serialization=True)
    tok.save_pretrained(mdir)
    with open(os.path.join(mdir, "nexa.json"), "w", encoding="utf-8") as f:
        json.dump({"base_model": student, "architecture": meta["architecture"],
                   "stand_in": True, "method": "lora", "merged": False,
                   "parameters": meta["parameters"], "real_parameters": meta["real_parameters"],
                   "distilled_from": teacher.label, "distill_method": "logits",
                   "job_id": forge.job_id(job)}, f, indent=2, sort_keys=True)
    hf.pack_dir(mdir, os.path.join(sdir, "model.tar"))
    shutil.rmtree(mdir, ignore_errors=True)
    forge.usage(input_tokens=processed)
    forge.artifact("student/model.tar", "model")
    res = {"model_id": student, "method": "lora", "epochs": epochs, "steps": step,
           "kd_temperature": T, "kd_alpha": alpha, "loss_history": history,
           "train_examples": len(train_ex), "valid_examples": len(held_ex),
           "valid_loss_before": before, "valid_loss": after, "stand_in": True,
           "artifact": "student/model.tar"}
    if before is not None and after is not None:
        res["heldout"] = {"untrained_student_loss": round(before, 6),
                          "student_loss": round(after, 6),
                          "student_beats_untrained": after < before}
    return res
