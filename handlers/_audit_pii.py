"""Personal data and secrets in text, for audit: find them (kind, where) and redact them.

Kinds: email, phone, credit_card (13-19 digits passing the Luhn check, with a card
network's leading digit), ipv4, ipv6, secret (AWS access keys, OpenAI/Stripe `sk-` keys,
GitHub, Slack and Google API tokens, JSON web tokens, private key headers, and long
high-entropy strings). Built for few false positives on ordinary SFT data: dates, times,
version numbers (v1.2.3, "version 10.0.0.1"), ordinary numbers, hashes in hex and
identifiers are not flagged; a bare 10-digit number is not a phone number (it needs a
leading + or the usual separators), a 16-digit number that fails Luhn is no card.

Pure standard library; one compiled regex per kind, each tried only when a cheap
pre-check (an '@', a digit, a long token) says it may match.
"""
from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter

KINDS = ("email", "phone", "credit_card", "ipv4", "ipv6", "secret")
PLACEHOLDER = {"email": "[EMAIL]", "phone": "[PHONE]", "credit_card": "[CREDIT_CARD]",
               "ipv4": "[IP_ADDRESS]", "ipv6": "[IP_ADDRESS]", "secret": "[SECRET]"}

_EMAIL = re.compile(r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
                    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])")
# North American style with separators: (555) 123-4567, 555-123-4567, 555.123.4567,
# +1 555 123 4567; or international with a leading +: +44 20 7946 0958, +4915112345678.
_PHONE = re.compile(
    r"(?<![\w+.-])(?:\+1[ .-]?)?(?:\(\d{3}\)[ .-]?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w-]|\.\d)"
    r"|(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,5}\)?){1,5}(?![\w-]|\.\d)")
_CARD = re.compile(r"(?<![\d.,+-])\d(?:[ -]?\d){12,18}(?![\d.,]\d|\d|-\d)")
_IPV4 = re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}"
                   r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w.]|\.\d)")
# dotted numbers that are not addresses: v1.2.3.4, version 10.0.0.1, section 3.2.1.4
_VERSION_BEFORE = re.compile(r"(?:\bv|\b(?:version|ver|release|build|chapter|section|sec|"
                             r"article|step|rule|item|figure|fig|table|clause|para)\.?\s*|§\s*)$",
                             re.IGNORECASE)
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}"
                   r"(?:(?<=:)\d{1,3}(?:\.\d{1,3}){3})?(?![\w:])")
_SECRETS = (
    ("private_key", re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY(?: BLOCK)?-----")),
    ("aws_access_key", re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA)"
                                  r"[0-9A-Z]{16}(?![A-Z0-9])")),
    ("api_key_sk", re.compile(r"(?<![\w-])sk[-_](?:proj-|live_|test_|ant-)?"
                              r"[A-Za-z0-9_-]{20,}(?![\w-])")),
    ("github_token", re.compile(r"(?<!\w)(?:gh[pousr]_[A-Za-z0-9]{36,255}|"
                                r"github_pat_[A-Za-z0-9_]{22,255})(?!\w)")),
    ("slack_token", re.compile(r"(?<!\w)xox[abposr]-[A-Za-z0-9-]{10,}(?![\w-])")),
    ("google_api_key", re.compile(r"(?<![\w-])AIza[0-9A-Za-z_-]{35}(?![\w-])")),
    ("jwt", re.compile(r"(?<![\w-])eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\."
                       r"[A-Za-z0-9_-]{8,}(?![\w-])")),
)
# Candidates for the entropy test: 32+ characters of a base64/base62 alphabet.
_LONG_TOKEN = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{32,}={0,2}(?![A-Za-z0-9+/=_-])")
_HAS_DIGIT = re.compile(r"\d")
ENTROPY_RATIO = 0.85  # of log2(len): random base62 of 32 chars scores ~0.9, words ~0.75


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def shannon_bits(s: str) -> float:
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def _high_entropy(tok: str) -> bool:
    if not (any(c.isupper() for c in tok) and any(c.islower() for c in tok)
            and any(c.isdigit() for c in tok)):
        return False  # words, hex digests, numbers
    if "/" in tok and tok.count("/") > 2:
        return False  # a path
    return shannon_bits(tok) >= ENTROPY_RATIO * math.log2(min(len(tok), 64))


def find(text: str) -> list[tuple[str, str, int, int]]:
    """Every finding in text as (kind, detail, start, end), non-overlapping, in order.
    detail: the secret's sub-kind (aws_access_key, ...), else the kind."""
    hits: list[tuple[str, str, int, int]] = []
    if not text:
        return hits
    for detail, rx in _SECRETS:
        for m in rx.finditer(text):
            hits.append(("secret", detail, m.start(), m.end()))
    if len(text) >= 32:
        for m in _LONG_TOKEN.finditer(text):
            if _high_entropy(m.group()):
                hits.append(("secret", "high_entropy", m.start(), m.end()))
    if "@" in text:
        for m in _EMAIL.finditer(text):
            hits.append(("email", "email", m.start(), m.end()))
    if _HAS_DIGIT.search(text):
        for m in _CARD.finditer(text):
            digits = re.sub(r"[ -]", "", m.group())
            if 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn_ok(digits) \
                    and _consistent_groups(m.group()):
                hits.append(("credit_card", "credit_card", m.start(), m.end()))
        for m in _PHONE.finditer(text):
            digits = sum(c.isdigit() for c in m.group())
            if 8 <= digits <= 15:
                hits.append(("phone", "phone", m.start(), m.end()))
        for m in _IPV4.finditer(text):
            if not _VERSION_BEFORE.search(text, max(0, m.start() - 16), m.start()):
                hits.append(("ipv4", "ipv4", m.start(), m.end()))
    if "::" in text or text.count(":") >= 3:
        for m in _IPV6.finditer(text):
            if _is_ipv6(m.group()):
                hits.append(("ipv6", "ipv6", m.start(), m.end()))
    return _non_overlapping(hits)


def _consistent_groups(s: str) -> bool:
    """1234 5678 9012 3456 or 1234-5678-...: one separator kind, groups of 4 to 6 digits
    (Amex 4-6-5), or none at all; not '1 2 3 4 ...'."""
    seps = set(re.sub(r"\d", "", s))
    if not seps:
        return True
    if len(seps) > 1:
        return False
    groups = re.split(r"[ -]", s)
    return all(3 <= len(g) <= 6 for g in groups)


def _is_ipv6(s: str) -> bool:
    groups = [g for g in s.split(":") if g]
    if len(groups) < 3 or not any(c.isdigit() for c in s):
        return False  # 'a::b', 'fe:ed:be' in prose and code
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return False
    return True


_PRIORITY = {"secret": 0, "email": 1, "credit_card": 2, "ipv6": 3, "ipv4": 4, "phone": 5}


def _non_overlapping(hits):
    """Keeps, among overlapping findings, the earlier-ranked kind (a secret over an e-mail
    inside it, a card over a phone-looking part of it), then the longer."""
    if len(hits) <= 1:
        return hits
    hits.sort(key=lambda h: (_PRIORITY[h[0]], -(h[3] - h[2]), h[2]))
    kept: list = []
    for h in hits:
        if all(h[3] <= k[2] or h[2] >= k[3] for k in kept):
            kept.append(h)
    kept.sort(key=lambda h: h[2])
    return kept


def redact(text: str, hits=None) -> str:
    """text with each finding replaced by its placeholder ([EMAIL], [SECRET], ...)."""
    if hits is None:
        hits = find(text)
    if not hits:
        return text
    out, pos = [], 0
    for kind, _detail, start, end in hits:
        out.append(text[pos:start])
        out.append(PLACEHOLDER[kind])
        pos = end
    out.append(text[pos:])
    return "".join(out)
