"""The model catalogue (issue 20 item 1, DESIGN §15): the operator's base models and each
account's own, listed by GET /api/models and resolved at submit - the caller's models first,
then the base catalogue; an unknown name is a 422 naming the param; another account's
model does not exist."""
import uuid

from test_data_plane import refused, run_ok, upload_ok

BASES = {"llama-3-8b": "llama", "mistral-7b": "mistral", "tiny-bigram": "bigram"}


def models(api, key="default"):
    resp = api.call("GET", "/api/models", key=key)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "list"
    return {m["id"]: m for m in body["data"]}


def model(api, name, key="default"):
    return api.call("GET", f"/api/models/{name}", "/api/models/{model}", key=key)


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_list_shows_the_base_catalogue(api):
    listed = models(api)
    for name, arch in BASES.items():
        m = listed[name]
        assert m["object"] == "model" and m["kind"] == "base", m
        assert m["architecture"] == arch and m["artifact_id"] is None, m
        assert isinstance(m["stand_in"], bool) and m["source"], m
    assert listed["llama-3-8b"]["parameters"] == 8030261248
    assert listed["llama-3-8b"]["stand_in"] is True
    one = model(api, "mistral-7b")
    assert one.status_code == 200 and one.json() == listed["mistral-7b"]
    assert model(api, "no-such-model").status_code == 404
    assert model(api, "bad%20name").status_code == 404


def test_unknown_model_is_refused_before_queueing(api, seeded_object):
    for job_type, body, param in (
            ("train", {"model_id": "no-such-model", "dataset_uri": "s3://b/k"}, "model_id"),
            ("evaluate", {"model_id": "no-such-model", "benchmark": "mmlu"}, "model_id"),
            ("deploy", {"model_id": "Not A Name"}, "model_id"),
            ("distill", {"teacher_model": "no-such-teacher", "student_model": "tiny-bigram",
                         "dataset_uri": "s3://b/k"}, "teacher_model"),
            ("distill", {"teacher_model": "llama-3-8b", "student_model": "no-such-student",
                         "dataset_uri": "s3://b/k"}, "student_model")):
        refused(api.submit(job_type, body), param, "GET /api/models lists the models")
    # an output_model name is validated like any param
    refused(api.submit("train", {"model_id": "tiny-bigram", "dataset_uri": "s3://b/k",
                                 "output_model": "Has Capitals"}), "output_model", "a-z")


def test_base_model_goes_to_the_worker(api, events, seeded_object):
    done = run_ok(api, "evaluate", {"model_id": "llama-3-8b", "benchmark": "mmlu"})
    dispatch = events.wait_for(done["job_id"], "forge.job.dispatch")[0]
    entry = dispatch["data"]["models"]["model_id"]
    assert entry["id"] == "llama-3-8b" and entry["kind"] == "base", entry
    assert entry["architecture"] == "llama" and entry["stand_in"] is True, entry
    assert not dispatch["data"].get("inputs"), dispatch  # a base model is not an input


def test_train_registers_its_model_for_evaluate_and_deploy(api, other_user_key, events,
                                                            seeded_object):
    name = unique("e2e-model")
    trained = run_ok(api, "train", {"model_id": "tiny-bigram", "dataset_uri": "s3://b/k",
                                    "epochs": 1, "output_model": name})
    art = next(a for a in trained["artifacts"] if a["kind"] == "model")
    got = model(api, name)
    assert got.status_code == 200, got.text
    m = got.json()
    assert m["kind"] == "fine_tuned" and m["base_model"] == "tiny-bigram", m
    assert m["architecture"] == "bigram" and m["artifact_id"] == art["artifact_id"], m
    assert m["source"] == f"artifact://{art['artifact_id']}" and m["job_id"] == trained["job_id"]
    assert m["model_uid"].startswith("mdl_")
    assert name in models(api)
    assert model(api, m["model_uid"]).json()["id"] == name

    # by name: the model's weights are the job's input, fetched by the worker
    evaluated = run_ok(api, "evaluate", {"model_id": name, "benchmark": "mmlu"})
    dispatch = events.wait_for(evaluated["job_id"], "forge.job.dispatch")[0]
    inputs = dispatch["data"]["inputs"]
    assert [i["param"] for i in inputs] == ["model_id"] and inputs[0]["uri"] == name, inputs
    assert inputs[0]["object_key"] == art["object_key"], inputs
    assert dispatch["data"]["models"]["model_id"]["artifact_id"] == art["artifact_id"]
    run_ok(api, "deploy", {"model_id": name})

    # the name is taken now: a second train under it is refused before queueing
    resp = api.submit("train", {"model_id": name, "dataset_uri": "s3://b/k",
                                "output_model": name})
    assert resp.status_code == 409 and resp.json()["error"]["param"] == "output_model", resp.text
    resp = api.submit("train", {"model_id": "tiny-bigram", "dataset_uri": "s3://b/k",
                                "output_model": "llama-3-8b"})
    assert resp.status_code == 409, resp.text

    # another tenant: the model does not exist, by name or by id
    assert model(api, name, key=other_user_key).status_code == 404
    assert model(api, m["model_uid"], key=other_user_key).status_code == 404
    assert name not in models(api, key=other_user_key)
    refused(api.submit("evaluate", {"model_id": name, "benchmark": "mmlu"}, key=other_user_key),
            "model_id", f"unknown model {name}")
    assert api.call("DELETE", f"/api/models/{name}", "/api/models/{model}",
                    key=other_user_key).status_code == 404

    # delete: gone from the catalogue, the name free again, the artifact kept
    resp = api.call("DELETE", f"/api/models/{name}", "/api/models/{model}")
    assert resp.status_code == 200 and resp.json()["id"] == name, resp.text
    assert model(api, name).status_code == 404
    refused(api.submit("deploy", {"model_id": name}), "model_id", f"unknown model {name}")
    assert api.call("GET", f"/api/artifacts/{art['artifact_id']}",
                    "/api/artifacts/{artifact_id}").status_code == 200


def test_default_name_and_a_fine_tune_of_a_fine_tune(api, seeded_object):
    trained = run_ok(api, "train", {"model_id": "tiny-bigram", "dataset_uri": "s3://b/k",
                                    "epochs": 1})
    name = f"tiny-bigram-ft-{trained['job_id'][-6:].lower()}"
    m = model(api, name)
    assert m.status_code == 200, m.text
    assert m.json()["base_model"] == "tiny-bigram"
    again = run_ok(api, "train", {"model_id": name, "dataset_uri": "s3://b/k", "epochs": 1})
    child = model(api, f"{name}-ft-{again['job_id'][-6:].lower()}").json()
    assert child["base_model"] == name and child["architecture"] == "bigram", child
    for n in (name, child["id"]):
        assert api.call("DELETE", f"/api/models/{n}", "/api/models/{model}").status_code == 200


def test_register_an_uploaded_model(api, other_user_key):
    from test_model_upload import hf_files, tar_of
    name = unique("uploaded")
    weights = upload_ok(api, tar_of(hf_files()[0]), purpose="model", filename="model.tar")
    data = upload_ok(api, b'{"text": "x"}\n', purpose="dataset")

    def register(body, key="default"):
        return api.call("POST", "/api/models", json=body, key=key)

    resp = register({"name": name, "uri": weights["uri"]})
    assert resp.status_code == 201, resp.text
    m = resp.json()
    assert m["kind"] == "uploaded" and m["artifact_id"] == weights["id"], m
    assert register({"name": name, "uri": weights["uri"]}).status_code == 409
    assert register({"name": "llama-3-8b", "uri": weights["uri"]}).status_code == 409
    for body, param in (({"name": "Bad Name", "uri": weights["uri"]}, "name"),
                        ({"name": unique("x"), "uri": data["uri"]}, "uri"),  # not purpose=model
                        ({"name": unique("x"), "uri": "s3://b/k"}, "uri")):
        resp = register(body)
        assert resp.status_code == 422 and resp.json()["error"]["param"] == param, resp.text
    # another tenant cannot register this account's file
    resp = register({"name": unique("x"), "uri": weights["uri"]}, key=other_user_key)
    assert resp.status_code == 422, resp.text
    # by name, the uploaded file is the job's model input (test_model_upload.py runs it)
    resp = api.submit("deploy", {"model_id": name})
    assert resp.status_code == 202, resp.text
    dispatch_ok = api.wait_terminal(resp.json()["job_id"], timeout=240)
    assert dispatch_ok["status"] == "succeeded", dispatch_ok
    api.call("DELETE", f"/api/deployments/{dispatch_ok['result']['deployment_id']}",
             "/api/deployments/{deployment_id}")
    # base models belong to the operator
    resp = api.call("DELETE", "/api/models/llama-3-8b", "/api/models/{model}")
    assert resp.status_code == 403, resp.text
    assert api.call("DELETE", f"/api/models/{name}", "/api/models/{model}").status_code == 200
