#!/usr/bin/env python3
"""Static check of docker-compose.yml, which no machine of this project can run (no
Docker engine): what can be checked without running it is checked here.

- it parses; every service but `net` shares net's network namespace; every depends_on
  names a service;
- every required variable (${NAME:?...}) is one the header's `.env` recipe generates;
- the worker's NF_WORKER_HANDLER_ENV names only variables of its environment; its
  NF_PROVIDERS_FILE is a file of the repository mounted into it, which the handlers'
  own loader (handlers/_providers.load_providers) accepts; every provider's api_key_env is
  in the worker's environment and handed to the handlers; a provider on 127.0.0.1:<port>
  is served by a service of the file (its --port), which checks the same key variable;
- every provider the catalogue (deploy/models.json) names in a provider:<name>/<model>
  source is configured, and offers that model.

    python3 tests/check/compose.py [docker-compose.yml]
"""
import json
import os
import pathlib
import re
import sys
import urllib.parse

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]


def fail(errors, msg):
    errors.append(msg)


def env_of(service):
    e = service.get("environment") or {}
    if isinstance(e, list):
        e = dict(x.split("=", 1) if "=" in x else (x, "") for x in e)
    return {k: str(v) for k, v in e.items()}


def mounts_of(service):
    """{container path: host path} of the service's bind mounts (short syntax)."""
    out = {}
    for v in service.get("volumes") or []:
        if isinstance(v, str) and v.startswith(("./", "/")):
            host, target = v.split(":")[:2]
            out[target] = host
    return out


def check(path):
    errors = []
    text = path.read_text()
    doc = yaml.safe_load(text)
    services = doc.get("services") or {}
    for name, svc in services.items():
        if name != "net" and svc.get("network_mode") != "service:net":
            fail(errors, f"{name}: network_mode must be service:net (one namespace)")
        for dep in svc.get("depends_on") or {}:
            if dep not in services:
                fail(errors, f"{name}: depends_on {dep}, which is no service")

    recipe = re.search(r"^#\s+for v in ([A-Z0-9_ ]+); do", text, re.MULTILINE)
    generated = set(recipe.group(1).split()) if recipe else set()
    for var in sorted(set(re.findall(r"\$\{([A-Z0-9_]+):\?", text)) - generated):
        fail(errors, f"${{{var}}} is required but the header's .env recipe does not make it")

    worker = services.get("worker") or {}
    wenv = env_of(worker)
    handler_env = [x for x in wenv.get("NF_WORKER_HANDLER_ENV", "").split(",") if x]
    for var in handler_env:
        if var not in wenv:
            fail(errors, f"worker: NF_WORKER_HANDLER_ENV names {var}, not in its environment")
    pfile = wenv.get("NF_PROVIDERS_FILE")
    if not pfile:
        fail(errors, "worker: no NF_PROVIDERS_FILE (the catalogue's gpt-4 needs a provider)")
        return errors
    if "NF_PROVIDERS_FILE" not in handler_env:
        fail(errors, "worker: NF_PROVIDERS_FILE is not handed to the handlers")
    host = mounts_of(worker).get(pfile)
    if host is None:
        fail(errors, f"worker: {pfile} is not mounted from the repository")
        return errors
    host_path = (path.parent / host).resolve()
    if not host_path.is_file():
        fail(errors, f"worker: mounts {host}, which does not exist")
        return errors

    sys.path.insert(0, str(ROOT / "handlers"))
    import _providers  # the handlers' own loader: what a handler will accept

    providers = _providers.load_providers(str(host_path))
    served = {}  # port -> (service name, its --api-key-env)
    for name, svc in services.items():
        cmd = svc.get("command")
        argv = cmd if isinstance(cmd, list) else str(cmd or "").split()
        code = " ".join(str(a) for a in argv)
        port = re.search(r'"--port",\s*"(\d+)"|--port\s+(\d+)', code)
        key = re.search(r'"--api-key-env",\s*"(\w+)"|--api-key-env\s+(\w+)', code)
        if port:
            served[int(port.group(1) or port.group(2))] = (
                name, (key.group(1) or key.group(2)) if key else None)
    for pname, p in providers.items():
        if p.api_key_env:
            if p.api_key_env not in wenv:
                fail(errors, f"provider {pname}: {p.api_key_env} is not in the worker's env")
            if p.api_key_env not in handler_env:
                fail(errors, f"provider {pname}: {p.api_key_env} is not handed to handlers")
        url = urllib.parse.urlsplit(p.base_url)
        if url.hostname in ("127.0.0.1", "localhost"):
            if url.port not in served:
                fail(errors, f"provider {pname}: nothing in the file serves {p.base_url}")
                continue
            sname, skey = served[url.port]
            if skey != p.api_key_env:
                fail(errors, f"provider {pname}: {sname} checks {skey}, the provider "
                     f"sends {p.api_key_env}")
            if skey and skey not in env_of(services[sname]):
                fail(errors, f"{sname}: --api-key-env {skey} is not in its environment")
            if sname not in (worker.get("depends_on") or {}):
                fail(errors, f"worker: does not wait for {sname}, its provider {pname}")

    catalogue = json.loads((ROOT / "deploy/models.json").read_text())
    models = catalogue.get("models", catalogue)
    for mname, m in models.items():
        src = m.get("source", "") if isinstance(m, dict) else ""
        if src.startswith("provider:"):
            pname, _, model = src[len("provider:"):].partition("/")
            if pname not in providers:
                fail(errors, f"catalogue {mname}: provider {pname} is not configured")
            elif (model or mname) not in providers[pname].models:
                fail(errors, f"catalogue {mname}: provider {pname} offers no {model}")
    return errors


def main(argv):
    path = pathlib.Path(argv[1] if len(argv) > 1 else ROOT / "docker-compose.yml").resolve()
    os.environ.pop("NF_PROVIDERS_FILE", None)
    errors = check(path)
    for e in errors:
        print(f"{path.name}: {e}", file=sys.stderr)
    if not errors:
        print(f"{path.name}: ok")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
