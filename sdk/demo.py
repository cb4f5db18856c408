#!/usr/bin/env python3
"""The product overview's flow, end to end, against the local stack (`./forge demo`).

    ./forge up && ./forge demo
    NEXA_API_KEY=nexa_... NEXA_API_URL=http://localhost:8000 python3 sdk/demo.py

Submits a generate job exactly as the overview's quick start does, follows it to the end,
shows its result, a few generated samples, its cost and the month's bill. The SDK is used
from this checkout when it is not installed. Exit status 0 when the job succeeded.
"""
import json
import os
import pathlib
import sys

try:
    import nexa_forge  # noqa: F401
except ImportError:  # not installed: use the checkout's copy
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "python"))

from nexa_forge import NexaForgeClient, NexaForgeError, NotFoundError  # noqa: E402


def main() -> int:
    # `./forge demo` passes NF_API_URL / NF_API_KEY; the SDK reads NEXA_API_URL / NEXA_API_KEY.
    for ours, sdk in (("NF_API_URL", "NEXA_API_URL"), ("NF_API_KEY", "NEXA_API_KEY")):
        if os.environ.get(ours) and not os.environ.get(sdk):
            os.environ[sdk] = os.environ[ours]
    if not os.environ.get("NEXA_API_KEY"):
        key_file = pathlib.Path(__file__).resolve().parents[1] / ".forge/dev/api_key"
        if key_file.is_file():
            os.environ["NEXA_API_KEY"] = key_file.read_text().strip()
    api_key = os.environ.get("NEXA_API_KEY")

    print(f"Nexa Forge demo against {os.environ.get('NEXA_API_URL', 'http://localhost:8000')}")
    print()

    # --- the overview's quick start, as written (with the real key) -------------------
    client = NexaForgeClient(api_key=api_key)
    job = client.generate(domain="biology", num_samples=100)
    print(f"Job ID: {job['job_id']}")
    status = client.get_job(job['job_id'])
    print(f"Status: {status['status']}")
    # ----------------------------------------------------------------------------------

    print()
    print("Waiting for the job to finish...")

    def show(j):
        progress = j.get("progress") or 0
        print(f"  {j['status']:<16} {progress * 100:5.1f}%  worker={j.get('worker_id') or '-'}")

    # wait() returns once the job ended and its cost is final (billing priced all of it)
    final = client.wait(job["job_id"], timeout=180, poll_interval=0.5,
                        raise_on_failure=False, on_update=show)
    print()
    if final["status"] != "succeeded":
        print(f"The job ended {final['status']}: {json.dumps(final.get('error'))}")
        return 1

    print(f"Result:   {json.dumps(final.get('result'))}")
    print(f"Cost:     ${final.get('cost_usd')}"
          + ("" if final.get("cost_final", True) else "  (not final yet)"))
    for art in final.get("artifacts") or []:
        print(f"Artifact: {art['artifact_id']}  {art.get('name')}  {art.get('bytes')} bytes  "
              f"sha256 {art.get('sha256', '')[:16]}...")
        sample = _first_lines(client, art, 3)
        if sample:
            print("  first samples:")
            for line in sample:
                print(f"    {line[:110]}")

    try:
        bill = client.billing_summary()
        print(f"This month so far: ${bill.get('total_usd')}")
    except NotFoundError:
        pass  # billing reads not served by this gateway yet
    except NexaForgeError as exc:
        print(f"(billing summary unavailable: {exc})")
    print()
    print("Done. Try the command line too:  nexa-forge jobs list")
    return 0


def _first_lines(client, art, n):
    """The first n lines of an artifact: through the API, else from its file:// URI."""
    data = None
    try:
        data = client.read_artifact(art)
    except NexaForgeError:
        uri = art.get("uri") or ""
        if uri.startswith("file://"):
            try:
                with open(uri[len("file://"):], "rb") as f:
                    data = f.read(64 * 1024)
            except OSError:
                data = None
    if not data:
        return []
    return data.decode("utf-8", "replace").splitlines()[:n]


if __name__ == "__main__":
    try:
        sys.exit(main())
    except NexaForgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
