"""Functions our task YAMLs name with !function (loaded by lm-evaluation-harness)."""
import re


def _clean(text):
    # as lm-evaluation-harness's hellaswag/utils.py: WikiHow's bracket artefacts
    text = text.strip().replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def hellaswag_docs(dataset):
    def one(doc):
        ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
        return {"query": _clean(doc["activity_label"] + ": " + ctx),
                "choices": [_clean(e) for e in doc["endings"]], "gold": int(doc["label"])}

    return dataset.map(one)


def text_results(doc, results):
    """One row of custom_text: results = [(log-likelihood of target, is_greedy)]."""
    ll = results[0][0]
    n = max(1, int(doc["tokens"]))
    return {"loss": -ll / n, "perplexity": (ll, n)}
