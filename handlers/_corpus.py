"""Synthetic instruction/response text from per-domain vocabularies and templates.

Used by `generate` (the samples) and `distill` (the "teacher" answers). Everything is
driven by a random.Random passed in, so a seed gives the same text every time.
"""

DOMAINS = {
    "biology": {
        "subjects": ["the mitochondrion", "a ribosome", "the cell membrane", "CRISPR-Cas9",
                     "photosynthesis", "the Krebs cycle", "messenger RNA", "a T cell",
                     "natural selection", "the nephron", "an enzyme", "a stem cell"],
        "actions": ["regulate", "transport", "synthesise", "signal to", "protect",
                    "break down", "repair", "replicate"],
        "objects": ["proteins", "glucose", "ATP", "DNA strands", "ions", "antigens",
                    "lipids", "hormones"],
        "contexts": ["under oxidative stress", "during mitosis", "in a eukaryotic cell",
                     "in low-oxygen conditions", "in plant tissue", "after infection"],
    },
    "chemistry": {
        "subjects": ["a catalyst", "an oxidising agent", "a buffer solution", "benzene",
                     "a covalent bond", "the Haber process", "an electrolyte", "a polymer",
                     "a noble gas", "an ester"],
        "actions": ["accelerate", "stabilise", "oxidise", "neutralise", "dissolve",
                    "polymerise", "reduce", "bind"],
        "objects": ["hydrogen ions", "reaction intermediates", "metal cations", "free radicals",
                    "carbonyl groups", "solvent molecules", "electrons", "monomers"],
        "contexts": ["at standard temperature", "in aqueous solution", "under high pressure",
                     "at equilibrium", "in the gas phase", "with a platinum surface"],
    },
    "finance": {
        "subjects": ["a bond ladder", "the yield curve", "a central bank", "an index fund",
                     "working capital", "a credit default swap", "inflation",
                     "a balance sheet", "a hedge", "the discount rate"],
        "actions": ["reduce", "price", "expose", "diversify", "finance", "hedge against",
                    "amplify", "signal"],
        "objects": ["interest rate risk", "cash flows", "equity returns", "default risk",
                    "currency swings", "liquidity", "volatility", "operating costs"],
        "contexts": ["in a recession", "when rates rise", "for a small business",
                     "over a ten-year horizon", "in emerging markets", "after an earnings miss"],
    },
    "medicine": {
        "subjects": ["an ACE inhibitor", "insulin therapy", "a beta blocker", "an MRI scan",
                     "triage", "a vaccine", "physical therapy", "a statin",
                     "an antibiotic course", "palliative care"],
        "actions": ["lower", "manage", "detect", "prevent", "relieve", "monitor", "treat",
                    "reduce"],
        "objects": ["blood pressure", "blood glucose", "inflammation", "chronic pain",
                    "bacterial load", "LDL cholesterol", "heart rate", "tissue damage"],
        "contexts": ["in elderly patients", "after surgery", "in the emergency department",
                     "for outpatients", "during pregnancy", "in chronic kidney disease"],
    },
    "law": {
        "subjects": ["a non-disclosure agreement", "the statute of limitations",
                     "a force majeure clause", "due process", "an arbitration clause",
                     "a fiduciary duty", "copyright", "a warranty", "strict liability",
                     "a data processing agreement"],
        "actions": ["limit", "govern", "protect", "allocate", "waive", "enforce", "define",
                    "restrict"],
        "objects": ["liability", "confidential information", "the parties' obligations",
                    "intellectual property", "damages", "personal data", "remedies",
                    "termination rights"],
        "contexts": ["under common law", "in a cross-border contract", "in an employment "
                     "relationship", "after a breach", "in consumer transactions",
                     "during litigation"],
    },
    "code": {
        "subjects": ["a hash map", "a mutex", "a binary search", "garbage collection",
                     "an event loop", "a database index", "memoisation", "a B-tree",
                     "a message queue", "tail recursion"],
        "actions": ["speed up", "serialise", "cache", "protect", "schedule", "validate",
                    "partition", "retry"],
        "objects": ["concurrent writes", "lookups", "network requests", "memory allocation",
                    "range queries", "function calls", "background jobs", "user input"],
        "contexts": ["in a multi-threaded server", "under heavy load", "in C", "in Python",
                     "on a single core", "with limited memory"],
    },
    "generic": {
        "subjects": ["a checklist", "a feedback loop", "a prototype", "a timeline",
                     "a budget", "a team retrospective", "a risk register", "a roadmap"],
        "actions": ["improve", "clarify", "organise", "track", "reduce", "prioritise",
                    "simplify", "measure"],
        "objects": ["outcomes", "dependencies", "costs", "delays", "decisions", "quality",
                    "communication", "scope"],
        "contexts": ["in a small project", "across teams", "under a deadline",
                     "for a new product", "in a large organisation", "during a migration"],
    },
}

QUESTION_TEMPLATES = [
    "How does {subject} {action} {object} {context}?",
    "Explain why {subject} can {action} {object} {context}.",
    "What happens to {object} when {subject} is used {context}?",
    "Describe, step by step, how {subject} would {action} {object}.",
    "Compare two ways {subject} might {action} {object} {context}.",
    "Give a short example where {subject} helps {action} {object}.",
]

ANSWER_OPENERS = [
    "In short, {subject} works to {action} {object} {context}.",
    "{Subject} tends to {action} {object}, especially {context}.",
    "The key point is that {subject} is able to {action} {object}.",
    "Put simply, {subject} will {action} {object} {context}.",
]

ANSWER_DETAILS = [
    "This matters because {object} otherwise accumulate and become harder to control.",
    "A common mistake is to ignore how {object} change {context}.",
    "The effect is strongest {context} and weaker elsewhere.",
    "In practice one measures {object} before and after to confirm the effect.",
    "An alternative is {other}, which can also {action} {object} but at a different cost.",
    "Because of this, {subject} is often combined with {other}.",
]


def domain_vocab(domain):
    """The vocabulary for a domain name (case-insensitive); unknown -> generic."""
    return DOMAINS.get(domain.strip().lower(), DOMAINS["generic"])


def _fill(template, slots):
    text = template.format(**slots)
    return text[0].upper() + text[1:]


def sample(rng, domain, details=2):
    """One (instruction, response) pair for a domain."""
    v = domain_vocab(domain)
    subject = rng.choice(v["subjects"])
    other = rng.choice([s for s in v["subjects"] if s != subject] or v["subjects"])
    slots = {"subject": subject, "Subject": subject[0].upper() + subject[1:],
             "action": rng.choice(v["actions"]), "object": rng.choice(v["objects"]),
             "context": rng.choice(v["contexts"]), "other": other}
    instruction = _fill(rng.choice(QUESTION_TEMPLATES), slots)
    parts = [_fill(rng.choice(ANSWER_OPENERS), slots)]
    for template in rng.sample(ANSWER_DETAILS, k=min(details, len(ANSWER_DETAILS))):
        parts.append(_fill(template, slots))
    return instruction, " ".join(parts)


def answer(rng, domain, prompt, style="teacher"):
    """A response to an existing prompt: picks vocabulary that appears in the prompt."""
    v = domain_vocab(domain)
    lowered = prompt.lower()
    subject = next((s for s in v["subjects"] if s.lower() in lowered), rng.choice(v["subjects"]))
    obj = next((o for o in v["objects"] if o.lower() in lowered), rng.choice(v["objects"]))
    other = rng.choice([s for s in v["subjects"] if s != subject] or v["subjects"])
    slots = {"subject": subject, "Subject": subject[0].upper() + subject[1:],
             "action": rng.choice(v["actions"]), "object": obj,
             "context": rng.choice(v["contexts"]), "other": other}
    n = 3 if style == "teacher" else 1
    parts = [_fill(rng.choice(ANSWER_OPENERS), slots)]
    for template in rng.sample(ANSWER_DETAILS, k=n):
        parts.append(_fill(template, slots))
    return " ".join(parts)
