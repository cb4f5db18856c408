#!/usr/bin/env python3
"""The product overview's flow, end to end, against the local stack (`./forge demo`).

    ./forge up && ./forge demo
    NEXA_API_KEY=nexa_... NEXA_API_URL=http://localhost:8000 python3 sdk/demo.py

1. writes three small Parquet datasets with pyarrow and uploads them with
   `client.upload_file(..., uri=...)` to s3://bucket/data.parquet, dataset.parquet and
   train.parquet (the names the overview's calls use; `bucket` is in your own namespace);
2. runs the overview's six SDK calls as written (generate, audit, distill, train,
   evaluate, deploy) and follows every job to its end;
3. shows the data plane at work: the trained model's artifact:// URI evaluated, an
   artifact downloaded, and the month's bill.

The SDK is used from this checkout when it is not installed. Exit status 0 when every job
succeeded.
"""
import json
import os
import pathlib
import random
import sys
import tempfile

try:
    import nexa_forge  # noqa: F401
except ImportError:  # not installed: use the checkout's copy
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "python"))

from nexa_forge import NexaForgeClient, NexaForgeError, NotFoundError  # noqa: E402

WAIT_S = 300

# A small instruction/response corpus the demo's datasets are drawn from: every
# (topic, template, subject, setting) combination is one distinct sample.
TEMPLATES = [("What does {x} do {c}?", "{X} {y} {c}."),
             ("Explain the role of {x} {c}.", "In short, {x} {y} {c}."),
             ("Why does {x} matter {c}?", "Because {x} {y}, which matters {c}.")]
SUBJECTS = {
    "biology": [("the mitochondrion", "produces most of the cell's energy as ATP"),
                ("the ribosome", "assembles proteins from amino acids"),
                ("the cell membrane", "controls what enters and leaves the cell"),
                ("an enzyme", "speeds up a chemical reaction without being used up")],
    "finance": [("a bond issue", "raises capital without giving up ownership"),
                ("a share buyback", "returns cash and concentrates ownership"),
                ("a credit line", "covers short-term cash needs"),
                ("an interest rate swap", "trades floating payments for fixed ones")],
    "law": [("a force majeure clause", "excuses performance after unforeseeable events"),
            ("an indemnity", "shifts a loss from one party to the other"),
            ("a non-compete clause", "limits where a former employee may work"),
            ("due process", "protects a person against arbitrary decisions")],
}
SETTINGS = {
    "biology": ["in a muscle cell", "during cell division", "under heat stress",
                "in a plant leaf", "in a bacterium", "as an organism ages"],
    "finance": ["for a young company", "when rates rise", "in a recession",
                "for a pension fund", "for a bank", "over the long term"],
    "law": ["in a supply contract", "in an employment dispute", "in a lease",
            "for a small business", "in a cross-border deal", "before a court"],
}


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
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        print("error: the demo writes its datasets with pyarrow, which this Python lacks: "
              "pip install -r handlers/requirements.txt (./forge up installs it)",
              file=sys.stderr)
        return 1

    print(f"Nexa Forge demo against {os.environ.get('NEXA_API_URL', 'http://localhost:8000')}")

    # --- 1. datasets in, through the Files API ---------------------------------------
    client = NexaForgeClient(api_key=api_key)
    with tempfile.TemporaryDirectory(prefix="nexa-demo-") as tmp:
        step("1. Three small Parquet datasets, written with pyarrow and uploaded")
        for name, rows in (("data.parquet", audit_sample(100, seed=1)),
                           ("dataset.parquet", prompts(60, seed=2)),
                           ("train.parquet", samples(200, seed=3))):
            path = write_parquet(pathlib.Path(tmp) / name, rows)
            uri = f"s3://bucket/{name}"
            print(f">>> client.upload_file({str(path)!r}, purpose=\"dataset\", uri={uri!r})")
            f = client.upload_file(path, purpose="dataset", uri=uri)
            print(f"    {f['id']}  {f['s3_uri']}  {f['bytes']} bytes, {len(rows)} rows, "
                  f"sha256 {f['sha256'][:16]}...")

    # --- 2. the overview's SDK calls, as written ---------------------------------------
    step("2. The overview's calls")
    print('>>> job = client.generate(domain="biology", num_samples=100)')
    job = client.generate(domain="biology", num_samples=100)
    print(f"Job ID: {job['job_id']}")
    status = client.get_job(job['job_id'])
    print(f"Status: {status['status']}")

    print('>>> client.audit(dataset_uri="s3://bucket/data.parquet")')
    audit = client.audit(dataset_uri="s3://bucket/data.parquet")
    print('>>> client.distill(teacher_model="gpt-4", student_model="llama-3-8b", '
          'dataset_uri="s3://bucket/dataset.parquet")')
    distill = client.distill(teacher_model="gpt-4", student_model="llama-3-8b",
                             dataset_uri="s3://bucket/dataset.parquet")
    # evaluate and deploy name the model the train registers (output_model): a name of an
    # earlier run goes first, and they are submitted once the train has registered it
    try:
        client.delete_model("my-model-v1")
    except NotFoundError:
        pass
    print('>>> client.train(model_id="llama-3-8b", dataset_uri="s3://bucket/train.parquet", '
          'epochs=3, output_model="my-model-v1")')
    train = client.train(model_id="llama-3-8b", dataset_uri="s3://bucket/train.parquet",
                         epochs=3, output_model="my-model-v1")
    print("    (waiting for the train: my-model-v1 exists once it has succeeded)")
    client.wait(train["job_id"], timeout=WAIT_S, poll_interval=0.5, raise_on_failure=False)
    print('>>> client.evaluate(model_id="my-model-v1", benchmark="mmlu")')
    evaluate = client.evaluate(model_id="my-model-v1", benchmark="mmlu")
    print('>>> client.deploy(model_id="my-model-v1", region="us-east-1")')
    deploy = client.deploy(model_id="my-model-v1", region="us-east-1")
    # ----------------------------------------------------------------------------------

    jobs = [job, audit, distill, train, evaluate, deploy]
    for j in jobs[1:]:
        print(f"    {j['job_type']:<9} {j['job_id']}  {j['status']}")

    step("Waiting for the six jobs (data.parquet has one duplicate and one empty response "
         "planted for the audit to find)")
    finals = [follow(client, j) for j in jobs]
    ok = all(f["status"] == "succeeded" for f in finals)

    # --- 3. the data plane at work ------------------------------------------------------
    step("3. Outputs feed the next job, and come back down")
    trained = finals[3]
    model = next((a for a in trained.get("artifacts") or [] if a.get("kind") == "model"), None)
    if model is not None:
        print(f">>> client.evaluate(model_id={model['uri']!r}, benchmark=\"mmlu\")"
              "   # the model train just made")
        chained = follow(client, client.evaluate(model_id=model["uri"], benchmark="mmlu"))
        ok = ok and chained["status"] == "succeeded"
    with tempfile.TemporaryDirectory(prefix="nexa-demo-") as tmp:
        for final, name in ((finals[0], None), (finals[1], "report.json")):
            art = next((a for a in final.get("artifacts") or []
                        if name is None or a.get("name") == name), None)
            if art is None:
                continue
            print(f">>> client.download_artifact({art['artifact_id']!r}, {tmp!r})")
            path = client.download_artifact(art, tmp)
            print(f"    {path.name}: {path.stat().st_size} bytes, SHA-256 checked")
            if path.suffix == ".json":
                report = json.loads(path.read_text())
                shown = {k: report[k] for k in ("rows", "duplicates", "empty_fields",
                                                "malformed_lines", "passed") if k in report}
                print(f"      {json.dumps(shown)}")
            else:
                for line in first_lines(path, 2):
                    print(f"      {line[:110]}")

    try:
        bill = client.billing_summary()
        print(f"\nThis month so far: ${bill.get('total_usd')}")
    except NotFoundError:
        pass  # billing reads not served by this gateway yet
    except NexaForgeError as exc:
        print(f"(billing summary unavailable: {exc})")
    print()
    if not ok:
        print("Some jobs did not succeed (see above).")
        return 1
    print("Done: every job succeeded. Try the command line too:  nexa-forge files list")
    return 0


def step(title):
    print(f"\n{title}")


def follow(client, job):
    """Waits for the job (and its final cost); prints one line about how it ended."""
    final = client.wait(job["job_id"], timeout=WAIT_S, poll_interval=0.5,
                        raise_on_failure=False)
    line = f"    {final['job_type']:<9} {final['job_id']}  {final['status']:<10}"
    if final["status"] == "succeeded":
        line += f"  ${final.get('cost_usd')}  {brief(final)}"
    else:
        line += f"  {json.dumps(final.get('error'))}"
    print(line)
    return final


def brief(job):
    """The few result fields that say what the job did."""
    result = job.get("result") or {}
    keys = {"generate": ("num_samples", "format", "bytes"),
            "audit": ("format", "rows", "duplicates", "empty_fields", "passed"),
            "distill": ("num_samples", "prompts"),
            "train": ("epochs", "final_loss", "tokens"),
            "evaluate": ("model_source", "benchmark", "accuracy", "perplexity"),
            "deploy": ("base_url", "model_source")}.get(job.get("job_type"), ())
    return json.dumps({k: result[k] for k in keys if k in result}, separators=(", ", ": "))


def samples(n, seed):
    """n distinct instruction/response rows (up to 216), in a seeded order."""
    combos = [(d, t, x, c) for d in sorted(SUBJECTS) for t in TEMPLATES
              for x in SUBJECTS[d] for c in SETTINGS[d]]
    rows = []
    for i, (domain, (question, answer), (x, y), c) in enumerate(
            random.Random(seed).sample(combos, n)):
        rows.append({"id": f"{domain}-{seed}-{i:04d}", "domain": domain,
                     "instruction": question.format(x=x, c=c),
                     "response": answer.format(x=x, X=x[0].upper() + x[1:], y=y, c=c)})
    return rows


def audit_sample(n, seed):
    """samples() with two flaws planted for the audit to find: one row repeated, and one
    response left empty."""
    rows = samples(n, seed)
    rows.append(dict(rows[0], id=f"dup-{seed}"))
    rows.append(dict(rows[1], id=f"empty-{seed}", response=""))
    return rows


def prompts(n, seed):
    """n prompts for a teacher to answer."""
    return [{"prompt": r["instruction"], "domain": r["domain"]} for r in samples(n, seed)]


def write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist(rows), str(path))
    return path


def first_lines(path, n):
    with open(path, "rb") as f:
        head = f.read(64 * 1024)
    return head.decode("utf-8", "replace").splitlines()[:n]


if __name__ == "__main__":
    try:
        sys.exit(main())
    except NexaForgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
