"""The CLI's model, deployment and chat commands (``cli.py`` adds them to its parser).

    nexa-forge models list | get NAME | delete NAME
    nexa-forge deployments list | get DEP | delete DEP
    nexa-forge chat DEP [--system TEXT] [--max-tokens N] [--temperature T]

``chat`` is an interactive prompt: each line you type is a user turn, the reply streams
in as it is generated, and the conversation is kept until end of input (Ctrl-D) or
``/exit``; ``/reset`` starts over. Input that is not a terminal is read the same way, one
turn per line, without the prompt (``echo "hi" | nexa-forge chat dep-...``).
"""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, Dict, List

if TYPE_CHECKING:  # pragma: no cover
    from .client import NexaForgeClient


def _ml_parsers(sub: Any) -> None:
    models = sub.add_parser("models", help="base and fine-tuned models")
    models.set_defaults(help_parser=models)
    msub = models.add_subparsers(dest="models_command", metavar="ACTION")
    ml = msub.add_parser("list", help="the models you can name as model_id")
    ml.add_argument("--json", action="store_true", help="print JSON, not a table")
    ml.set_defaults(handler=_cmd_models_list)
    mg = msub.add_parser("get", help="show one model")
    mg.add_argument("name")
    mg.set_defaults(handler=lambda c, a: _out().print_json(c.models.get(a.name)))
    md = msub.add_parser("delete", help="remove one of your models from the catalogue")
    md.add_argument("name")
    md.set_defaults(handler=lambda c, a: _out().print_json(c.models.delete(a.name)))

    deps = sub.add_parser("deployments", help="your deployed models (endpoints)")
    deps.set_defaults(help_parser=deps)
    dsub = deps.add_subparsers(dest="deployments_command", metavar="ACTION")
    dl = dsub.add_parser("list", help="your deployments, newest first")
    dl.add_argument("--json", action="store_true", help="print JSON, not a table")
    dl.set_defaults(handler=_cmd_deployments_list)
    dg = dsub.add_parser("get", help="show one deployment")
    dg.add_argument("deployment")
    dg.set_defaults(handler=lambda c, a: _out().print_json(c.deployments.get(a.deployment)))
    dd = dsub.add_parser("delete", help="stop a deployment's endpoint")
    dd.add_argument("deployment")
    dd.set_defaults(handler=lambda c, a: _out().print_json(c.deployments.delete(a.deployment)))

    chat = sub.add_parser("chat", help="chat with a deployment (interactive, streaming)")
    chat.add_argument("deployment", help="dep-... (see `deployments list`)")
    chat.add_argument("--system", help="a system message to start with")
    chat.add_argument("--max-tokens", type=int, help="at most this many tokens per reply")
    chat.add_argument("--temperature", type=float, help="sampling temperature (0..2)")
    chat.set_defaults(handler=_cmd_chat)


class _out:
    """cli.py's output helpers (imported late: cli.py imports this module)."""

    def __init__(self) -> None:
        from . import cli
        self.print_json = cli._print_json
        self.table = cli._table
        self.note = cli._note


def _cmd_models_list(client: "NexaForgeClient", args: argparse.Namespace) -> int:
    models = client.models.list()
    if args.json:
        return int(_out().print_json(models))
    _out().table([dict(m) for m in models], [
        ("MODEL", "id"), ("KIND", "kind"), ("BASE", "base_model"),
        ("ARCHITECTURE", "architecture"), ("PARAMETERS", "parameters"),
        ("STAND_IN", "stand_in"), ("JOB", "job_id")])
    return 0


def _cmd_deployments_list(client: "NexaForgeClient", args: argparse.Namespace) -> int:
    deps = client.deployments.list()
    if args.json:
        return int(_out().print_json(deps))
    _out().table([dict(d) for d in deps], [
        ("DEPLOYMENT", "id"), ("MODEL", "model"), ("STATUS", "status"), ("REGION", "region"),
        ("REPLICAS", "replicas"), ("BASE_URL", "base_url"), ("CREATED", "created_at")])
    return 0


def _cmd_chat(client: "NexaForgeClient", args: argparse.Namespace) -> int:
    dep = client.deployments.get(args.deployment)  # a 404 before the first prompt
    interactive = sys.stdin.isatty()
    out = _out()
    if interactive:
        out.note(f"chat with {dep.get('model')} ({dep.get('id')}); /reset starts over, "
                 "Ctrl-D or /exit ends")
    start: List[Dict[str, Any]] = []
    if args.system:
        start.append({"role": "system", "content": args.system})
    messages = list(start)
    while True:
        try:
            line = input("you> " if interactive else "")
        except EOFError:
            if interactive:
                print(file=sys.stderr)
            return 0
        text = line.strip()
        if not text:
            continue
        if text == "/exit":
            return 0
        if text == "/reset":
            messages = list(start)
            continue
        messages.append({"role": "user", "content": text})
        reply: List[str] = []
        for delta in client.chat(dep["id"], messages, stream=True, max_tokens=args.max_tokens,
                                 temperature=args.temperature):
            reply.append(delta)
            sys.stdout.write(delta)
            sys.stdout.flush()
        sys.stdout.write("\n")
        sys.stdout.flush()
        messages.append({"role": "assistant", "content": "".join(reply)})
