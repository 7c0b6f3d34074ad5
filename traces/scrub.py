"""Secret and PII scrubbing, as SQL expressions DuckDB applies to a whole batch at once (RE2 regexes).

Secrets are scrubbed on the JSONL line before its fields are extracted (one pass over every field, the
quarantined copy included), after JSON escapes that could hide one are decoded (`\\/` for `/`, `\\u0041`
for `A`: traces.jsonl_sql). Every pattern matches only characters that need no JSON escaping and the
marker needs none either, so a valid line stays valid. What is replaced by `[REDACTED_SECRET]`:

- tokens with a known shape: OpenAI/Anthropic `sk-` keys, GitHub, AWS access key ids, Slack, Google,
  Hugging Face tokens, JWTs (`eyJ...` three dot-separated parts), with or without a `Bearer ` prefix;
- the token after `Bearer ` or `Basic ` (Basic only when it is base64 of `user:password`, RFC 7617);
- the password of a URL `scheme://user:password@host` (the user may be empty: `redis://:password@host`);
- AWS secret access keys: a run of exactly 40 base64 characters holding upper- and lower-case letters
  and a digit, `/` or `+` (so a 40-hex git SHA or an English word is left alone). These have no fixed
  prefix, so they are found as candidates first and checked, then replaced.
PII patterns can match digits (phone numbers), so they run on the extracted fields, not on the raw line. Some of
those fields are JSON text (messages, metadata, a quarantined line), where an address may follow an escape
(`\\n`, `\\u4f60`) whose letters the pattern would otherwise eat, leaving `\\[REDACTED_EMAIL]`, which is not JSON.
So a PII match starts only at the start, after a character that is neither a letter, a digit nor a backslash, or
after a whole escape or a run of escaped backslashes, which is put back (PII_START): the marker never splits an
escape.
"""
from __future__ import annotations

import base64
import binascii
import re

SECRET_MARK = "[REDACTED_SECRET]"
EMAIL_MARK = "[REDACTED_EMAIL]"
PHONE_MARK = "[REDACTED_PHONE]"

# One alternation, replaced by \1 \2 MARK \3: group 1 keeps a "Bearer " prefix, groups 2-3 keep a URL's
# "scheme://user:" and "@"; unmatched groups are empty, so the other alternatives replace the whole token.
SECRET_PATTERNS = [
    r"((?i:bearer)\s+)[A-Za-z0-9._~+/-]{16,}=*",    # HTTP bearer tokens (the scheme is case-insensitive)
    r"([A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#@\"'\\]*:)[^\s/?#@\"'\\]+(@)",  # password in a URL (user may be empty)
    r"sk-(?:proj|svcacct|admin|ant-api\d\d)-[A-Za-z0-9_-]{20,}",  # OpenAI project/service/admin, Anthropic keys
    r"sk-[A-Za-z0-9]{20,}",                         # legacy OpenAI-style keys
    r"gh[pousr]_[A-Za-z0-9]{30,}",                  # GitHub tokens
    r"github_pat_[A-Za-z0-9_]{22,}",
    r"(?:AKIA|ASIA)[0-9A-Z]{16}",                   # AWS access key ids
    r"xox[abposr]-[A-Za-z0-9-]{10,}",               # Slack tokens
    r"AIza[0-9A-Za-z_-]{35}",                       # Google API keys
    r"hf_[A-Za-z0-9]{30,}",                         # Hugging Face tokens
    r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",  # JWTs (header and payload are JSON)
]
SECRET_RE = "|".join(SECRET_PATTERNS)
SECRET_REPLACEMENT = r"\1\2" + SECRET_MARK + r"\3"
# 40 base64 characters between non-base64 ones; a JSON escape (\n, \u00e9) before it is a boundary too,
# because on a raw line its letter would otherwise join the run
AWS_SECRET_RE = r"(?:^|[^A-Za-z0-9/+\\]|\\[nrtbf\"\\/]|\\u[0-9A-Fa-f]{4})([A-Za-z0-9/+]{40})(?:$|[^A-Za-z0-9/+=])"
BASIC_RE = r"(?:[Bb]asic|BASIC)\s+([A-Za-z0-9+/]{4,}={0,2})"
# a run of escaped backslashes (JSON `\\`: a literal backslash) is taken whole from the character before it (RE2 has
# no look-behind): `\\[^u\\]` alone took its second half and the address's first letter, which stayed in clear
PII_START = r"(^|[^A-Za-z0-9\\]|\\u[0-9A-Fa-f]{4}|\\[^u\\]|(?:^|[^\\])(?:\\\\)+)"
EMAIL_BODY = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
PHONE_BODY = r"(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)|\d{2,4})[\s.-]\d{3,4}[\s.-]\d{3,4}"
# A match also takes the escaped backslashes right after it (group 2, put back): left behind, the next match would
# start at the last of them, taking it for an escape with the next address's first letter (`a@x.org\\bob@...` kept
# the "b"). That next address has then lost its start (the character before it) to the first match, so each pattern
# runs twice (PII_PASSES) and the second pass finds it after the marker; an address starts only after a character its
# local part cannot hold (EMAIL_START), or the first pass would take `k@...` of `bob.k@...` and leave `bob.` in clear.
PII_END = r"((?:\\\\)*)"
PII_PASSES = 2
EMAIL_START = PII_START.replace(r"[^A-Za-z0-9\\]", r"[^A-Za-z0-9._%+\\-]", 1)
EMAIL_RE, PHONE_RE = EMAIL_START + EMAIL_BODY + PII_END, PII_START + PHONE_BODY + PII_END
# plain text (a prompt, a response, the split key, an error) has no escapes: a backslash there is a character, and
# after one the JSON rule would take `\j` of `C:\jane@...` for an escape and keep the "j"
PLAIN_START = r"(^|[^A-Za-z0-9])"
PLAIN_EMAIL_RE, PLAIN_PHONE_RE = PLAIN_START + EMAIL_BODY + "()", PLAIN_START + PHONE_BODY + "()"  # no escapes: \2 empty

# group 1: what the start matched, group 2: the backslashes after the match; both put back
EMAIL_KEEP, PHONE_KEEP = r"\1" + EMAIL_MARK + r"\2", r"\1" + PHONE_MARK + r"\2"


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


# Literal substrings every pattern of SECRET_RE contains: `contains` scans at memchr speed, so the regex
# only runs on the ~1% of values that might hold a secret (4x faster on a 1 KB/line log).
SECRET_HINTS = ["earer", "EARER", "://", "sk-", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "AKIA", "ASIA",
                "xox", "AIza", "hf_", "eyJ"]
BASIC_HINTS = ["asic", "ASIC"]


def _replace_checked(expr: str, pattern: str, check: str) -> str:
    """Replace every candidate (group 1 of `pattern`) for which the lambda body `check` (on c) holds."""
    found = f"list_filter(regexp_extract_all({expr}, {_lit(pattern)}, 1), lambda c: {check})"
    return f"list_reduce(list_prepend({expr}, {found}), lambda acc, c: replace(acc, c, {_lit(SECRET_MARK)}))"


AWS_CHECK_SQL = "regexp_matches(c, '[A-Z]') AND regexp_matches(c, '[a-z]') AND regexp_matches(c, '[0-9/+]')"
BASIC_CHECK_SQL = "coalesce(contains(try(decode(from_base64(c))), ':'), false)"


def secrets_sql(expr: str) -> str:
    hint = " OR ".join(f"contains({expr}, {_lit(h)})" for h in SECRET_HINTS)
    out = f"regexp_replace({expr}, {_lit(SECRET_RE)}, {_lit(SECRET_REPLACEMENT)}, 'g')"
    out = f"(CASE WHEN {hint} THEN {out} ELSE {expr} END)"
    basic_hint = " OR ".join(f"contains({expr}, {_lit(h)})" for h in BASIC_HINTS)
    out = f"(CASE WHEN {basic_hint} THEN {_replace_checked(out, BASIC_RE, BASIC_CHECK_SQL)} ELSE {out} END)"
    return _replace_checked(out, AWS_SECRET_RE, AWS_CHECK_SQL)


def pii_sql(expr: str, plain: bool = False) -> str:
    """plain: the value is text, not JSON text (no escapes to keep whole)."""
    for pattern, keep in _pii_replacements(plain):
        expr = f"regexp_replace({expr}, {_lit(pattern)}, {_lit(keep)}, 'g')"
    return expr


def _pii_replacements(plain: bool) -> list[tuple[str, str]]:
    """(pattern, replacement) in the order they run: e-mails, then phone numbers, each PII_PASSES times."""
    email, phone = (PLAIN_EMAIL_RE, PLAIN_PHONE_RE) if plain else (EMAIL_RE, PHONE_RE)
    return [(email, EMAIL_KEEP)] * PII_PASSES + [(phone, PHONE_KEEP)] * PII_PASSES


def is_aws_secret(c: str) -> bool:
    return bool(re.search("[A-Z]", c) and re.search("[a-z]", c) and re.search("[0-9/+]", c))


def is_basic_credential(c: str) -> bool:
    try:
        return ":" in base64.b64decode(c, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False


def scrub_text(text: str | None, secrets: bool = True, pii: bool = False, plain: bool = False) -> str | None:
    """The same rules in Python, for the few values that never pass through SQL (ASCII classes, as RE2's).
    plain: the text is not JSON text (see pii_sql)."""
    if text is None:
        return None
    if secrets:
        text = re.sub(SECRET_RE, lambda m: (m.group(1) or "") + (m.group(2) or "") + SECRET_MARK
                      + (m.group(3) or ""), text, flags=re.ASCII)
        for pattern, check in ((BASIC_RE, is_basic_credential), (AWS_SECRET_RE, is_aws_secret)):
            for c in {m.group(1) for m in re.finditer(pattern, text, flags=re.ASCII)}:
                text = text.replace(c, SECRET_MARK) if check(c) else text
    for pattern, keep in _pii_replacements(plain) if pii else []:
        text = re.sub(pattern, keep, text, flags=re.ASCII)
    return text
