"""Data-parallel training for train (_sft.py): one rank per GPU the agent gave the job.

The agent pins a job's GPUs with CUDA_VISIBLE_DEVICES and says how many in NF_GPU_COUNT.
With more than one, train runs data-parallel with torch.distributed and
DistributedDataParallel (NCCL on CUDA); NF_DDP_CPU_RANKS=N runs N CPU ranks with gloo
instead (tests, and checking a multi-GPU setup on a machine without GPUs; an operator's
variable: the agent passes NF_ names to handlers only when NF_WORKER_HANDLER_ENV lists
them, and no job param sets it).

    agent --stdin job, stdout lines--> handlers/train = rank 0 (the handler process)
                                          |  TCPStore on 127.0.0.1 (a free port)
                                          +--> handlers/train rank 1   (same job on stdin,
                                          +--> ...                      stdout discarded,
                                          +--> handlers/train rank N-1  stderr kept)

The agent still sees ONE handler process speaking stdout lines (DESIGN §7): rank 0 alone
writes protocol lines, checkpoints, metrics and artifacts; the other ranks are its
children with their stdout on /dev/null, in its process group (the agent's SIGTERM and
SIGKILL reach every rank), and die with it (PR_SET_PDEATHSIG). Rank 0 fails the attempt as
retryable (exit 75) when another rank dies, so nothing waits for a collective that never
completes.

The batch and the schedule: params.batch_size is the effective (global) batch. Each step's
global batch is the single-process run's (the same seeded permutation); rank r trains on
its items r, r+N, r+2N, ... (DistributedSampler's interleaving, without its padding, so the
last, smaller batch is the same too), and its loss is its summed token NLL x N / the global
batch's labelled tokens, so DDP's gradient average is exactly the single-process gradient
of the token-mean loss. Steps per epoch, the learning rate and its warmup/decay are the
single-process run's, step for step; runs differ only by floating-point summation order
(and LoRA dropout masks, drawn per rank).
"""
from __future__ import annotations

import ctypes
import datetime
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field

import _forge as forge

HERE = os.path.dirname(os.path.abspath(__file__))
ENV_RANK = "NF_DDP_RANK"  # set by rank 0 for the ranks it starts
ENV_WORLD = "NF_DDP_WORLD"
ENV_PORT = "NF_DDP_PORT"
ENV_PARENT = "NF_DDP_PARENT"  # rank 0's pid: a rank whose parent is gone exits
ENV_CPU_RANKS = "NF_DDP_CPU_RANKS"
MAX_CPU_RANKS = 16
TIMEOUT_S = 600  # a collective that waits longer than this fails the rank


@dataclass
class Ctx:
    """The data-parallel context of this process (world 1: a plain single-process run)."""

    rank: int = 0
    world: int = 1
    backend: str = ""
    device: object = None
    children: list = field(default_factory=list)
    finishing: bool = False  # rank 0 is past training: children exiting 0 are expected

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def wanted_world(cuda: bool, cuda_devices: int) -> tuple[int, str]:
    """(ranks, backend): on CUDA min(NF_GPU_COUNT, visible devices) NCCL ranks; without
    CUDA, NF_DDP_CPU_RANKS gloo ranks; 1 when neither asks for more."""
    if cuda:
        try:
            n = int(os.environ.get("NF_GPU_COUNT") or "1")
        except ValueError:
            n = 1
        n = max(1, min(n, cuda_devices))
        return n, "nccl"
    raw = os.environ.get(ENV_CPU_RANKS, "")
    if not raw:
        return 1, "gloo"
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_CPU_RANKS:
        forge.fail(f"{ENV_CPU_RANKS} must be an integer 1..{MAX_CPU_RANKS}, not {raw!r}",
                   forge.EXIT_RETRYABLE)
    return n, "gloo"


def _die_with_parent() -> None:
    """In a rank rank 0 started: SIGKILL when rank 0 dies (Linux prctl), and exit now if
    it already has (set here, not in a preexec_fn: rank 0 has threads by then)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    if str(os.getppid()) != os.environ.get(ENV_PARENT):
        sys.exit(forge.EXIT_RETRYABLE)


def _watch_children(ctx: Ctx) -> None:
    """Rank 0's watcher: another rank exiting non-zero ends the attempt (retryable), since
    rank 0 would otherwise wait in a collective until TIMEOUT_S."""
    for proc in ctx.children:
        threading.Thread(target=_watch_one, args=(ctx, proc), daemon=True).start()


def _watch_one(ctx: Ctx, proc: subprocess.Popen) -> None:
    rc = proc.wait()
    if rc != 0 and not ctx.finishing:
        for other in ctx.children:
            if other.poll() is None:
                other.kill()
        # straight to fd 2 (the main thread may hold sys.stderr's buffer), then out at once
        os.write(2, f"data-parallel rank (pid {proc.pid}) exited with {rc}: the attempt "
                    "stops\n".encode())
        os._exit(forge.EXIT_RETRYABLE)


def setup(job: dict, cuda: bool, cuda_devices: int) -> Ctx:
    """Joins or starts the data-parallel group. In the handler process (rank 0) with more
    than one rank wanted: starts the TCPStore and ranks 1..N-1, then joins. In a rank
    started so: joins. Else a world of 1 (nothing is imported or started)."""
    if os.environ.get(ENV_RANK):
        _die_with_parent()
        rank, world = int(os.environ[ENV_RANK]), int(os.environ[ENV_WORLD])
        backend = "nccl" if cuda else "gloo"
        port = int(os.environ[ENV_PORT])
    else:
        world, backend = wanted_world(cuda, cuda_devices)
        if world <= 1:
            return Ctx()
        rank, port = 0, 0
    import torch
    import torch.distributed as dist

    timeout = datetime.timedelta(seconds=TIMEOUT_S)
    # rank 0's store listens on a free port before the ranks it starts connect to it
    store = dist.TCPStore("127.0.0.1", port, world, rank == 0, timeout=timeout,
                          wait_for_workers=False)
    ctx = Ctx(rank=rank, world=world, backend=backend)
    if rank == 0:
        payload = json.dumps(job)
        for r in range(1, world):
            env = dict(os.environ, **{ENV_RANK: str(r), ENV_WORLD: str(world),
                                      ENV_PORT: str(store.port), ENV_PARENT: str(os.getpid())})
            proc = subprocess.Popen([sys.executable, os.path.join(HERE, "train")],
                                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
            proc.stdin.write(payload.encode())
            proc.stdin.close()
            ctx.children.append(proc)
        _watch_children(ctx)
    if cuda:
        torch.cuda.set_device(rank)  # the rank-th of the job's pinned GPUs
        ctx.device = torch.device("cuda", rank)
    else:
        ctx.device = torch.device("cpu")
        # the machine's cores shared between the ranks
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group(backend, store=store, rank=rank, world_size=world,
                            timeout=timeout)
    return ctx


def wrap(ctx: Ctx, model):
    """The model DDP trains with (model itself when not data-parallel)."""
    if not ctx.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def shard(ctx: Ctx, batch: list) -> list:
    """This rank's items of a global batch: r, r+N, r+2N, ... (all of it at world 1)."""
    return batch[ctx.rank::ctx.world] if ctx.active else batch


def all_sum(ctx: Ctx, values: list[float], device) -> list[float]:
    """The element-wise sum of values over the ranks (values itself at world 1)."""
    if not ctx.active:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def mean_loss(ctx: Ctx, model, examples: list, batch_size: int, pad_id: int,
              device) -> tuple[float, int]:
    """_hf.mean_loss over every rank: each scores its share (r, r+N, ...) of examples and
    the sums are added up, so every rank gets the single-process mean; tokens processed
    are all the examples' (as a single-process run counts them)."""
    import _hf as hf

    if not ctx.active:
        return hf.mean_loss(model, examples, batch_size, pad_id, device)
    import torch

    mine = examples[ctx.rank::ctx.world]
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i in range(0, len(mine), batch_size):
            ids, labels, mask = hf.collate(mine[i:i + batch_size], pad_id, device)
            nll, n = hf.token_nll(model, ids, labels, mask)
            total += float(nll)
            count += n
    model.train(was_training)
    total, count = all_sum(ctx, [total, count], device)
    return (total / count if count else float("nan")), sum(len(x) for x, _ in examples)


def finish(ctx: Ctx) -> None:
    """Leaves the group; rank 0 waits for the other ranks (a non-zero exit: 75)."""
    if not ctx.active:
        return
    import torch.distributed as dist

    ctx.finishing = True
    try:
        dist.barrier()
    finally:
        dist.destroy_process_group()
    for proc in ctx.children:
        rc = proc.wait()
        if rc != 0:
            forge.fail(f"data-parallel rank (pid {proc.pid}) exited with {rc}",
                       forge.EXIT_RETRYABLE)
