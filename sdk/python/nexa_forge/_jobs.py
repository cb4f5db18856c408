"""The job types as typed methods: every parameter the handlers accept (the gateway checks
them: ``services/gateway/validate.c``), with its type, range and default in the docstring.

Mixed into :class:`~nexa_forge.NexaForgeClient`. Each method submits through
``submit()``: a parameter left ``None`` is not sent, so the server's default applies, and
``**extra_params`` passes parameters newer than this SDK through unchanged. Every method
also takes the fields every job has: ``metadata`` (up to 16 string pairs, for filtering),
``priority``, ``max_attempts``, ``timeout_seconds``, ``gpu_type``, ``gpu_count``,
``labels`` (worker requirements) and ``idempotency_key``.
"""
from __future__ import annotations

from typing import Any, Dict, Literal, Mapping, Optional, Sequence

Job = Dict[str, Any]
Benchmark = Literal["mmlu", "gsm8k", "hellaswag", "arc_easy", "custom"]
TrainMethod = Literal["lora", "full"]
DistillMethod = Literal["sequence", "logits"]
DataFormat = Literal["jsonl", "parquet"]
GenerateTask = Literal["instruction", "qa", "chat"]
AuditCheck = Literal["duplicates", "near_duplicates", "pii", "language", "token_lengths",
                     "training_format", "empty_fields", "length_stats", "schema", "judge"]


class _SubmitMixin:
    """generate / audit / distill / train / evaluate / deploy (needs ``self.submit``)."""

    def submit(self, job_type: str, params: Optional[Mapping[str, Any]] = None,
               **kwargs: Any) -> Job:  # pragma: no cover - NexaForgeClient's
        raise NotImplementedError

    def generate(self, domain: str, num_samples: int, *, model: Optional[str] = None,
                 generator: Optional[str] = None, task: Optional[GenerateTask] = None,
                 seed_topics: Optional[Sequence[str]] = None,
                 dataset_uri: Optional[str] = None, temperature: Optional[float] = None,
                 system_prompt: Optional[str] = None, max_tokens: Optional[int] = None,
                 near_duplicate_threshold: Optional[float] = None,
                 seed: Optional[int] = None, format: Optional[DataFormat] = None,
                 output_format: Optional[DataFormat] = None,
                 metadata: Optional[Mapping[str, str]] = None, priority: Optional[int] = None,
                 max_attempts: Optional[int] = None, timeout_seconds: Optional[int] = None,
                 gpu_type: Optional[str] = None, gpu_count: Optional[int] = None,
                 labels: Optional[Mapping[str, str]] = None,
                 idempotency_key: Optional[str] = None, **extra_params: Any) -> Job:
        """Synthetic data generation: ``num_samples`` (1..1,000,000) rows about ``domain``
        (at most 128 characters), written as a dataset artifact (``samples.jsonl`` or
        ``samples.parquet``).

        ``generator``: ``"template"`` (the default: fixed templates, instruction/response
        rows; ``model`` is then only recorded in each row) or the model writing the rows
        - a provider model (``gpt-4``), one of your deployments (``dep-...``), a catalogue
        or account model - which makes OpenAI chat rows. With a model: ``task``
        ``instruction`` (default), ``qa`` or ``chat``; ``seed_topics`` (up to 1000) or
        ``dataset_uri`` (seed rows shown as examples; ``s3://`` / ``artifact://``);
        ``temperature`` 0..2 (default 0.9); ``system_prompt`` (at most 4000
        characters); ``max_tokens`` 8..1024 per answer (default 128);
        ``near_duplicate_threshold`` (0..1] (default 0.8: rows this similar to a kept one
        are dropped). ``seed``: the same params and seed give the same template rows.
        ``format`` / ``output_format``: ``jsonl`` (default) or ``parquet``
        (``output_format`` wins)."""
        return self.submit(
            "generate", {"domain": domain, "num_samples": num_samples, "model": model,
                         "generator": generator, "task": task,
                         "seed_topics": list(seed_topics) if seed_topics is not None else None,
                         "dataset_uri": dataset_uri, "temperature": temperature,
                         "system_prompt": system_prompt, "max_tokens": max_tokens,
                         "near_duplicate_threshold": near_duplicate_threshold, "seed": seed,
                         "format": format, "output_format": output_format},
            metadata=metadata, priority=priority, max_attempts=max_attempts,
            timeout_seconds=timeout_seconds, gpu_type=gpu_type, gpu_count=gpu_count,
            labels=labels, idempotency_key=idempotency_key, **extra_params)

    def audit(self, dataset_uri: str, *, checks: Optional[Sequence[AuditCheck]] = None,
              near_duplicate_threshold: Optional[float] = None,
              tokenizer_model: Optional[str] = None, max_seq_length: Optional[int] = None,
              fix: Optional[bool] = None, judge: Optional[str] = None,
              judge_max_rows: Optional[int] = None,
              metadata: Optional[Mapping[str, str]] = None, priority: Optional[int] = None,
              max_attempts: Optional[int] = None, timeout_seconds: Optional[int] = None,
              gpu_type: Optional[str] = None, gpu_count: Optional[int] = None,
              labels: Optional[Mapping[str, str]] = None,
              idempotency_key: Optional[str] = None, **extra_params: Any) -> Job:
        """Dataset quality audit of ``dataset_uri``: ``s3://bucket/key`` (a file you
        uploaded there, :meth:`upload_file`) or ``artifact://art_...`` (an upload or a
        job's output); Parquet, JSONL or CSV.

        ``checks`` (default all): ``duplicates``, ``near_duplicates`` (MinHash LSH at
        ``near_duplicate_threshold``, (0..1], default 0.8), ``pii`` (e-mail addresses,
        phone and card numbers, IP addresses, secrets), ``language``, ``token_lengths``
        (under ``tokenizer_model``'s tokenizer, default ``llama-3-8b``; rows over
        ``max_seq_length``, default 128, are flagged), ``training_format`` (chat,
        prompt/completion, instruction/response rows as train reads them),
        ``empty_fields``, ``length_stats``, ``schema``. Artifacts: ``report.json`` and
        ``scored.parquet`` (per-row flags and scores); ``fix=True`` adds
        ``cleaned.jsonl`` (duplicates dropped, personal data redacted, invalid rows
        dropped), a dataset :meth:`train` accepts. ``judge`` (a provider model such as
        ``gpt-4``, one of your deployments or models) also scores up to
        ``judge_max_rows`` (1..10000, default 200) valid rows from 1 to 5."""
        return self.submit(
            "audit", {"dataset_uri": dataset_uri,
                      "checks": list(checks) if checks is not None else None,
                      "near_duplicate_threshold": near_duplicate_threshold,
                      "tokenizer_model": tokenizer_model, "max_seq_length": max_seq_length,
                      "fix": fix, "judge": judge, "judge_max_rows": judge_max_rows},
            metadata=metadata, priority=priority, max_attempts=max_attempts,
            timeout_seconds=timeout_seconds, gpu_type=gpu_type, gpu_count=gpu_count,
            labels=labels, idempotency_key=idempotency_key, **extra_params)

    def distill(self, teacher_model: str, student_model: str, dataset_uri: str, *,
                num_samples: Optional[int] = None, method: Optional[DistillMethod] = None,
                max_tokens: Optional[int] = None, temperature: Optional[float] = None,
                system_prompt: Optional[str] = None, holdout: Optional[float] = None,
                epochs: Optional[int] = None, batch_size: Optional[int] = None,
                learning_rate: Optional[float] = None,
                train_method: Optional[TrainMethod] = None,
                max_seq_length: Optional[int] = None, seed: Optional[int] = None,
                kd_temperature: Optional[float] = None, kd_alpha: Optional[float] = None,
                output_model: Optional[str] = None, max_chars: Optional[int] = None,
                checkpoint_every: Optional[int] = None,
                metadata: Optional[Mapping[str, str]] = None, priority: Optional[int] = None,
                max_attempts: Optional[int] = None, timeout_seconds: Optional[int] = None,
                gpu_type: Optional[str] = None, gpu_count: Optional[int] = None,
                labels: Optional[Mapping[str, str]] = None,
                idempotency_key: Optional[str] = None, **extra_params: Any) -> Job:
        """Distillation of ``teacher_model`` (a provider model such as ``gpt-4``, a
        deployment, a catalogue or account model) into ``student_model`` (a base model
        train fine-tunes) on the prompts of ``dataset_uri`` (chat ``messages``,
        instruction, prompt, question or text rows); the student is registered as
        ``output_model`` (default ``<student>-ft-<job id's last 6>``).

        ``method``: ``sequence`` (default: SFT on the teacher's answers) or ``logits``
        (KL at ``kd_temperature`` (0..100], default 2, mixed with cross-entropy by
        ``kd_alpha`` (0..1], default 0.5; only for a local teacher sharing the student's
        tokenizer). ``num_samples``: the first N prompts (1..1,000,000; default all);
        ``max_tokens`` 1..4096 per answer (default 128); ``temperature`` 0..2 (teacher
        sampling, default 0); ``system_prompt``; ``holdout`` [0, 1) of the prompts held
        out to compare the trained student with the untrained one (default 0.1). The
        student's training: ``epochs`` 1..100, ``batch_size`` 1..4096,
        ``learning_rate`` (0..1], ``train_method`` ``lora`` or ``full``,
        ``max_seq_length`` 8..512, ``seed``. ``max_chars`` (1..1,000,000, default 8000):
        longer answers are dropped. A teacher outage is retried by the platform, resuming
        the collection where it stopped (the answers so far are checkpointed every
        ``checkpoint_every`` answers)."""
        return self.submit(
            "distill", {"teacher_model": teacher_model, "student_model": student_model,
                        "dataset_uri": dataset_uri, "num_samples": num_samples,
                        "method": method, "max_tokens": max_tokens,
                        "temperature": temperature, "system_prompt": system_prompt,
                        "holdout": holdout, "epochs": epochs, "batch_size": batch_size,
                        "learning_rate": learning_rate, "train_method": train_method,
                        "max_seq_length": max_seq_length, "seed": seed,
                        "kd_temperature": kd_temperature, "kd_alpha": kd_alpha,
                        "output_model": output_model, "max_chars": max_chars,
                        "checkpoint_every": checkpoint_every},
            metadata=metadata, priority=priority, max_attempts=max_attempts,
            timeout_seconds=timeout_seconds, gpu_type=gpu_type, gpu_count=gpu_count,
            labels=labels, idempotency_key=idempotency_key, **extra_params)

    def train(self, model_id: str, dataset_uri: str, *, epochs: Optional[int] = None,
              validation_uri: Optional[str] = None, validation_split: Optional[float] = None,
              learning_rate: Optional[float] = None,
              learning_rate_multiplier: Optional[float] = None, lora: Optional[bool] = None,
              method: Optional[TrainMethod] = None, lora_r: Optional[int] = None,
              lora_alpha: Optional[float] = None, lora_dropout: Optional[float] = None,
              batch_size: Optional[int] = None, warmup_ratio: Optional[float] = None,
              max_seq_length: Optional[int] = None, seed: Optional[int] = None,
              train_on_inputs: Optional[bool] = None, merge: Optional[bool] = None,
              metric_every: Optional[int] = None, output_model: Optional[str] = None,
              from_checkpoint: Optional[str] = None,
              early_stopping_patience: Optional[int] = None,
              metadata: Optional[Mapping[str, str]] = None, priority: Optional[int] = None,
              max_attempts: Optional[int] = None, timeout_seconds: Optional[int] = None,
              gpu_type: Optional[str] = None, gpu_count: Optional[int] = None,
              labels: Optional[Mapping[str, str]] = None,
              idempotency_key: Optional[str] = None, **extra_params: Any) -> Job:
        """Fine-tuning of ``model_id`` (a base model, or an account model) on
        ``dataset_uri`` (chat, prompt/completion or instruction/response rows; Parquet,
        JSONL or CSV). The result is registered as ``output_model`` (default
        ``<base>-ft-<job id's last 6>``), ready to :meth:`evaluate` or :meth:`deploy`.

        ``epochs`` 1..100 (default 3); validation data: ``validation_uri`` or
        ``validation_split`` [0, 1), not both. ``method`` ``lora`` (default; ``lora`` is
        the older boolean spelling) with ``lora_r`` 1..1024, ``lora_alpha``,
        ``lora_dropout`` [0, 1), ``merge`` (the adapter merged into the weights), or
        ``full``. ``learning_rate`` (0..1] or ``learning_rate_multiplier`` (0..100] of the
        method's default; ``batch_size`` 1..4096, ``warmup_ratio`` [0, 1),
        ``max_seq_length`` 8..512, ``seed``, ``train_on_inputs`` (loss on the prompt
        tokens too). ``metric_every`` (default 10): a live metric point every that many
        steps (:meth:`job_metrics`), one per epoch with the validation loss.
        ``from_checkpoint``: ``artifact://`` of a checkpoint (:meth:`checkpoints`) to
        continue from. ``early_stopping_patience`` 1..100 epochs without a better
        validation loss stop the run (needs validation data)."""
        return self.submit(
            "train", {"model_id": model_id, "dataset_uri": dataset_uri, "epochs": epochs,
                      "validation_uri": validation_uri, "validation_split": validation_split,
                      "learning_rate": learning_rate,
                      "learning_rate_multiplier": learning_rate_multiplier, "lora": lora,
                      "method": method, "lora_r": lora_r, "lora_alpha": lora_alpha,
                      "lora_dropout": lora_dropout, "batch_size": batch_size,
                      "warmup_ratio": warmup_ratio, "max_seq_length": max_seq_length,
                      "seed": seed, "train_on_inputs": train_on_inputs, "merge": merge,
                      "metric_every": metric_every, "output_model": output_model,
                      "from_checkpoint": from_checkpoint,
                      "early_stopping_patience": early_stopping_patience},
            metadata=metadata, priority=priority, max_attempts=max_attempts,
            timeout_seconds=timeout_seconds, gpu_type=gpu_type, gpu_count=gpu_count,
            labels=labels, idempotency_key=idempotency_key, **extra_params)

    def evaluate(self, model_id: str, benchmark: Benchmark, *,
                 dataset_uri: Optional[str] = None, compare_to: Optional[str] = None,
                 metadata: Optional[Mapping[str, str]] = None, priority: Optional[int] = None,
                 max_attempts: Optional[int] = None, timeout_seconds: Optional[int] = None,
                 gpu_type: Optional[str] = None, gpu_count: Optional[int] = None,
                 labels: Optional[Mapping[str, str]] = None,
                 idempotency_key: Optional[str] = None, **extra_params: Any) -> Job:
        """Evaluation of ``model_id`` on ``benchmark`` (``mmlu``, ``gsm8k``,
        ``hellaswag``, ``arc_easy``, or ``custom`` with ``dataset_uri``); ``compare_to``
        (a model name or artifact:// URI) is evaluated on the same data in the same job
        (result ``compare_to`` and ``delta``). The scores are also a metric point at step
        0 (``<benchmark>/<metric>``, :meth:`job_metrics`)."""
        return self.submit(
            "evaluate", {"model_id": model_id, "benchmark": benchmark,
                         "dataset_uri": dataset_uri, "compare_to": compare_to},
            metadata=metadata, priority=priority, max_attempts=max_attempts,
            timeout_seconds=timeout_seconds, gpu_type=gpu_type, gpu_count=gpu_count,
            labels=labels, idempotency_key=idempotency_key, **extra_params)

    def deploy(self, model_id: str, *, region: Optional[str] = None,
               replicas: Optional[int] = None,
               metadata: Optional[Mapping[str, str]] = None, priority: Optional[int] = None,
               max_attempts: Optional[int] = None, timeout_seconds: Optional[int] = None,
               gpu_type: Optional[str] = None, gpu_count: Optional[int] = None,
               labels: Optional[Mapping[str, str]] = None,
               idempotency_key: Optional[str] = None, **extra_params: Any) -> Job:
        """Deployment of ``model_id`` (region default us-east-1, replicas 1..64): once it
        succeeded, ``result.deployment_id`` is an OpenAI-compatible endpoint
        (:meth:`chat`, :meth:`openai`, :attr:`deployments`)."""
        return self.submit(
            "deploy", {"model_id": model_id, "region": region, "replicas": replicas},
            metadata=metadata, priority=priority, max_attempts=max_attempts,
            timeout_seconds=timeout_seconds, gpu_type=gpu_type, gpu_count=gpu_count,
            labels=labels, idempotency_key=idempotency_key, **extra_params)
