"""Constraints a check implies, as grammars a teacher server can decode under (the `constrained` strategy).

    from curate.synth.constraints import constraint_for, request_extras, dialect
    c = constraint_for(["punctuation:no_comma"], [{}])      # Constraint(name=..., gbnf=..., regex=...)
    body = {"messages": [...], **request_extras(c, dialect(settings))}

`constraint_for` reads the IFEval instructions of a prompt (lm-eval ids and their kwargs; missing kwargs are
filled exactly as the checker fills them, through evals.ifeval.build_instruction) and returns one grammar
for all of them, or None where a grammar would be dishonest: two instructions that need different shapes of
the whole answer (bullets and sections), a literal the answer must contain that a character ban forbids
(a comma in the request to repeat under no_comma, "Section" under all-lowercase, "My answer is yes." under
all-capitals), JSON with anything that shapes the text around it, or any instruction this module does not
know to be content-only (length and sentence counts, highlights, nth paragraph, two responses...).

A grammar is one GBNF rule (`root ::= ...`, llama.cpp's dialect) and the same language as a regex (vLLM), built
from one small expression tree so the two cannot drift apart. JSON is a JSON schema instead. Content stays
free (any character but the forbidden ones); a run of free text that something required must follow (a
closing quote, an end phrase, a postscript, the next bullet) is bounded (MAX_CHARS), so the model can finish
the required part inside the completion budget; trailing free text is not bounded: the server lets the model
end its turn wherever the grammar is complete.

Character bans: no_comma forbids "," (and the full-width comma); lowercase forbids uppercase letters of the
Latin(-1), Greek and Cyrillic ranges, capitals the lowercase ones (lm-eval's islower()/isupper() also count
other scripts: the verifier catches those). A literal whose check ignores case (end phrase, postscript
marker, the repeated request) is case-converted to fit a case ban; other literals must fit as they are.

`request_extras(constraint, dialect)` puts it where each server looks:
- "llama.cpp": {"grammar": gbnf} (or {"json_schema": schema}): llama.cpp's server (tools/server README);
- "vllm": {"structured_outputs": {"regex"|"json"|"grammar": ...}} (vLLM >= 0.12, where the old
  guided_* fields were removed); "vllm-legacy": {"guided_regex"|"guided_json"|"guided_grammar": ...};
- "openai": {"response_format": {"type": "json_schema", ...}} for JSON schema constraints, else {};
- "transformers": the `logit_bias` token bans of curate.synth.guidance for the checks it can ban (no_comma,
  lowercase, capitals), else {} (`transformers serve` has no grammar support);
- "none": {}.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MAX_CHARS = 400  # free text before a required ending: the 135M teacher writes ~2-4 chars/token (French and
# digits run short), so 400 chars leave room for the ending inside the 192-token default budget
LINE_CHARS = 200  # one bullet item or postscript line
TITLE_CHARS = 80
DIALECTS = ("llama.cpp", "vllm", "vllm-legacy", "openai", "transformers", "none")


@dataclass(frozen=True)
class Constraint:
    name: str  # the instruction ids it enforces, joined with "+"
    gbnf: str | None = None
    regex: str | None = None
    json_schema: dict | None = None


# ------------------------------------------------------------------ a tiny grammar tree: GBNF and regex from one source

@dataclass(frozen=True)
class Lit:
    text: str


@dataclass(frozen=True)
class Not:
    """Any one character except these (single characters, or (lo, hi) ranges)."""
    items: tuple


@dataclass(frozen=True)
class Rep:
    node: object
    lo: int
    hi: int | None  # None: unbounded


@dataclass(frozen=True)
class Seq:
    nodes: tuple


@dataclass(frozen=True)
class Alt:
    nodes: tuple


def seq(*nodes):
    """A sequence without the parts left out (None); one part stands alone, none is None."""
    parts = tuple(n for n in nodes if n is not None)
    return None if not parts else (parts[0] if len(parts) == 1 else Seq(parts))


def opt(node) -> Rep:
    return Rep(node, 0, 1)


def _code(ch: str) -> str:
    """A character as an escape both llama.cpp's GBNF parser and regex engines read."""
    o = ord(ch)
    return f"\\x{o:02X}" if o < 0x100 else (f"\\u{o:04X}" if o < 0x10000 else f"\\U{o:08X}")


def _class_body(items: tuple) -> str:
    out = [] if items else [_code("\x00")]  # "[^]" is no class: nothing banned -> anything but NUL
    for it in items:
        out.append(f"{_code(it[0])}-{_code(it[1])}" if isinstance(it, tuple) else _code(it))
    return "".join(out)


_GBNF_LIT = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def gbnf(node) -> str:
    if isinstance(node, Lit):
        return '"' + "".join(_GBNF_LIT.get(c, c if c.isprintable() else _code(c)) for c in node.text) + '"'
    if isinstance(node, Not):
        return f"[^{_class_body(node.items)}]"
    if isinstance(node, Rep):
        return _group(gbnf(node.node), node.node) + _times(node)
    if isinstance(node, Seq):
        return "(" + " ".join(gbnf(n) for n in node.nodes) + ")"
    if isinstance(node, Alt):
        return "(" + " | ".join(gbnf(n) for n in node.nodes) + ")"
    raise TypeError(node)


_RE_SPECIAL = set(".^$*+?{}[]\\|()")


def regex(node) -> str:
    if isinstance(node, Lit):
        return "".join("\\" + c if c in _RE_SPECIAL else ("\\n" if c == "\n" else
                       (c if c.isprintable() else _code(c))) for c in node.text)
    if isinstance(node, Not):
        return f"[^{_class_body(node.items)}]"
    if isinstance(node, Rep):
        inner = regex(node.node)
        atom = inner if isinstance(node.node, Not) or (isinstance(node.node, Lit) and len(node.node.text) == 1) \
            else f"(?:{inner})"
        return atom + _times(node)
    if isinstance(node, Seq):
        return "".join(regex(n) for n in node.nodes)
    if isinstance(node, Alt):
        return "(?:" + "|".join(regex(n) for n in node.nodes) + ")"
    raise TypeError(node)


def _group(text: str, node) -> str:
    return text if isinstance(node, (Not, Lit, Seq, Alt)) else f"({text})"


def _times(r: Rep) -> str:
    if (r.lo, r.hi) == (0, 1):
        return "?"
    if r.hi is None:
        return "*" if r.lo == 0 else ("+" if r.lo == 1 else f"{{{r.lo},}}")
    return f"{{{r.lo}}}" if r.lo == r.hi else f"{{{r.lo},{r.hi}}}"


# ------------------------------------------------------------------ character bans

UPPER = (("A", "Z"), ("\u00c0", "\u00d6"), ("\u00d8", "\u00de"), ("\u0391", "\u03a9"), ("\u0400", "\u042f"))
LOWER = (("a", "z"), ("\u00df", "\u00f6"), ("\u00f8", "\u00ff"), ("\u03b1", "\u03c9"), ("\u0430", "\u045f"))
BANS = {"punctuation:no_comma": (",", "\uff0c"),
        "change_case:english_lowercase": UPPER,
        "change_case:english_capital": LOWER}
CASE_OF = {"change_case:english_lowercase": str.lower, "change_case:english_capital": str.upper}


def _banned(ch: str, items: tuple) -> bool:
    return any((it[0] <= ch <= it[1]) if isinstance(it, tuple) else ch == it for it in items)


class _Conflict(Exception):
    """Two instructions cannot both be expressed by one honest grammar."""


@dataclass
class _Plan:
    ban: tuple = ()
    case: object = None  # str.lower / str.upper: the case a case-insensitive literal is written in
    quote: bool = False
    repeat: str | None = None
    title: bool = False
    body: tuple | None = None  # ("bullets", n) | ("sections", splitter, n) | ("paragraphs", n) | ("choice", opts)
    json: bool = False
    postscript: str | None = None
    end: str | None = None

    def text(self, *also) -> Not:
        """Free text: anything but the banned characters (and `also`)."""
        return Not(tuple(dict.fromkeys(tuple(self.ban) + tuple(also))))

    def lit(self, s: str, fold_case: bool) -> Lit:
        if fold_case and self.case is not None:
            s = self.case(s)
        if any(_banned(c, self.ban) for c in s):
            raise _Conflict(f"the literal {s!r} holds a banned character")
        return Lit(s)

    def set_body(self, body: tuple) -> None:
        if self.body is not None or self.json:
            raise _Conflict("two shapes of the whole answer")
        self.body = body


# instructions whose checks only look at content a free-text grammar leaves free (or that a grammar here
# enforces): they compose with any grammar below
FREE = {"keywords:existence", "keywords:frequency", "keywords:forbidden_words", "keywords:letter_frequency",
        "language:response_language", "detectable_content:number_placeholders",
        "detectable_format:number_highlighted_sections"}
# marks inside free text: (open, close) and the count's kwarg. They shape the body only when no other instruction
# does (then they stay FREE: left to the sample): a grammar for "N bullets, each somewhere holding a mark" is not
# worth its size. lm-eval counts "*x*" (and "**x**") highlights and "[x]" placeholders anywhere in the answer
MARKS = {"detectable_format:number_highlighted_sections": ("*", "*", "num_highlights"),
         "detectable_content:number_placeholders": ("[", "]", "num_placeholders")}
MARK_CHARS = 40  # one highlighted phrase or placeholder name
# "include the keywords a, b" / "the word w at least N times": the words as literals between stretches of free
# text, which the model may end early to write the word where it fits (lm-eval searches them case-insensitively)
KEYWORDS = {"keywords:existence", "keywords:frequency"}
SPACE = Alt((Lit(" "), Lit("\n")))
WORD_CHARS = LOWER + UPPER + (("0", "9"),)  # what may not follow a keyword or a mark
SOFT = set(MARKS) | KEYWORDS  # these shape the body only when nothing else does


def _keywords(iid: str, args: dict) -> tuple | None:
    if iid == "keywords:existence":
        return tuple(str(k) for k in args.get("keywords") or ()) or None
    if args.get("relation") != "at least":
        return None  # "less than N" is left to the sample
    return (str(args["keyword"]),) * int(args["frequency"])


def _args(iid: str, kwargs: dict | None):
    """The instruction's effective args and the checker instance (lm-eval fills missing kwargs)."""
    from evals.ifeval import build_instruction
    inst = build_instruction(iid, kwargs, "")[0]
    return inst.get_instruction_args() or {}, inst


def _add(plan: _Plan, iid: str, kwargs: dict | None) -> bool:
    """Fold one instruction into the plan; False when this module has no grammar for it."""
    if iid in BANS:
        if iid in CASE_OF:
            if plan.case is not None and plan.case is not CASE_OF[iid]:
                raise _Conflict("all lowercase and all capitals")
            plan.case = CASE_OF[iid]
        plan.ban = plan.ban + BANS[iid]
        return True
    if iid in SOFT:
        if plan.body is not None or plan.json:
            return False
        args, _ = _args(iid, kwargs)
        if iid in MARKS:
            open_, close, key = MARKS[iid]
            plan.body = ("marks", open_, close, int(args[key]))
            return True
        words = _keywords(iid, args)
        if words:
            plan.body = ("keywords", words)
        return words is not None
    if iid == "keywords:letter_frequency":  # "less than N of a letter": never write it (a lipogram); "at least" is free
        args, _ = _args(iid, kwargs)
        if args.get("let_relation") != "less than":
            return False
        letter = str(args["letter"]).lower()
        plan.ban = plan.ban + tuple(dict.fromkeys((letter, letter.upper())))
        return True
    if iid == "length_constraints:nth_paragraph_first_word":
        args, _ = _args(iid, kwargs)
        if plan.postscript or (plan.repeat and int(args["nth_paragraph"]) == 1):
            raise _Conflict("a postscript is a paragraph of its own; a repeated request starts the first")
        plan.set_body(("first_word", int(args["num_paragraphs"]), int(args["nth_paragraph"]), args["first_word"]))
        return True
    if iid not in SHAPES:
        return False
    args, inst = _args(iid, kwargs)
    SHAPES[iid](plan, args, inst)
    return True


def _quote(plan, args, inst):
    plan.quote = True


def _end(plan, args, inst):
    plan.end = args["end_phrase"].strip()


def _postscript(plan, args, inst):
    plan.postscript = args["postscript_marker"].strip()


def _title(plan, args, inst):
    plan.title = True


def _repeat(plan, args, inst):
    plan.repeat = args["prompt_to_repeat"].strip()


def _json(plan, args, inst):
    if plan.body is not None:
        raise _Conflict("JSON and another shape")
    plan.json = True


SHAPES = {
    "startend:quotation": _quote,
    "startend:end_checker": _end,
    "detectable_content:postscript": _postscript,
    "detectable_format:title": _title,
    "combination:repeat_prompt": _repeat,
    "detectable_format:json_format": _json,
    "detectable_format:number_bullet_lists": lambda p, a, i: p.set_body(("bullets", int(a["num_bullets"]))),
    "detectable_format:multiple_sections": lambda p, a, i: p.set_body(
        ("sections", a["section_spliter"].strip(), int(a["num_sections"]))),
    "length_constraints:number_paragraphs": lambda p, a, i: p.set_body(("paragraphs", int(a["num_paragraphs"]))),
    "detectable_format:constrained_response": lambda p, a, i: p.set_body(
        ("choice", tuple(getattr(i, "_constrained_responses", ())))),
}


def constraint_for(instruction_ids: list[str], kwargs_list: list[dict], *, max_chars: int = MAX_CHARS
                   ) -> Constraint | None:
    """One constraint for all the prompt's instructions, or None (nothing to constrain, or not honestly).
    max_chars bounds free text that a required part must follow (about 2 x the completion's max_tokens)."""
    ids = list(instruction_ids or [])
    kwargs_list = list(kwargs_list or [{}] * len(ids))
    if not ids or len(kwargs_list) != len(ids):
        return None
    plan, enforced = _Plan(), []
    try:
        # marks and keywords last: they take the body only when no other instruction shapes it
        for iid, kw in sorted(zip(ids, kwargs_list), key=lambda pair: pair[0] in SOFT):
            if _add(plan, iid, kw):
                enforced.append(iid)
            elif iid not in FREE:
                return None
        if not enforced:
            return None
        name = "+".join(enforced)
        if plan.json:
            if plan.ban or plan.quote or plan.repeat or plan.title or plan.postscript or plan.end:
                return None  # a JSON schema cannot carry character bans or text around the object
            return Constraint(name, json_schema={"type": "object"})
        tree = _tree(plan, max(40, int(max_chars)))
    except (_Conflict, KeyError, ValueError, TypeError):
        return None
    return Constraint(name, gbnf="root ::= " + gbnf(tree), regex=regex(tree))


def _tree(plan: _Plan, max_chars: int):
    """[quote] [repeated request] [title line] body [postscript line] [end phrase] [quote]."""
    if plan.quote and plan.repeat:
        raise _Conflict("the answer must start with the request and with a quote")
    if plan.body and plan.body[0] == "paragraphs":
        plan.ban = plan.ban + ("*",)  # "***" anywhere (a postscript, a title) would split another paragraph
    if plan.body and plan.body[0] == "bullets" and plan.repeat and re.search(r"^\s*[*-]", plan.repeat, re.M):
        raise _Conflict("the request to repeat holds lines lm-eval counts as bullets")
    tail = plan.quote or plan.postscript or plan.end  # something must follow the body
    body = _body(plan, max_chars if tail else None, max_chars)
    head = seq(plan.lit('"', False) if plan.quote else None,
               seq(plan.lit(plan.repeat, True), Lit("\n")) if plan.repeat else None,
               seq(Lit("<<"), plan.text("\n", "<", ">", " "), Rep(plan.text("\n", "<", ">"), 0, TITLE_CHARS - 1),
                   Lit(">>\n")) if plan.title else None)
    if plan.quote and plan.body and plan.body[0] == "bullets" and not (plan.repeat or plan.title):
        head = seq(head, Lit("\n"))  # a bullet line must start the line: '"* a' is not a bullet to lm-eval
    ps = None
    if plan.postscript:
        ps = seq(Lit("\n\n"), plan.lit(plan.postscript, True), Lit(" "),
                 Rep(plan.text("\n"), 1, LINE_CHARS))
    end = seq(Lit(" "), plan.lit(plan.end, True)) if plan.end else None
    return seq(head, body, ps, end, plan.lit('"', False) if plan.quote else None)


def _body(plan: _Plan, n_max: int | None, limit: int):
    """The answer's main part; n_max bounds trailing free text (None: the model may go on until it ends its
    turn); sections and paragraphs share `limit` (the next one must follow each)."""
    if plan.body is None:
        return Rep(plan.text(), 1, n_max)
    kind = plan.body[0]
    if kind == "bullets":
        n = plan.body[1]
        if n < 1:
            raise _Conflict("no bullets")
        item = seq(Lit("* "), Rep(plan.text("\n"), 1, LINE_CHARS))
        intro = opt(seq(plan.text("\n", "*", "-", " ", "\t"), Rep(plan.text("\n"), 0, LINE_CHARS), Lit("\n")))
        return seq(intro, item, *(seq(Lit("\n"), item) for _ in range(n - 1)))
    if kind == "sections":
        _, splitter, n = plan.body
        per = max(40, limit // max(n, 1))
        block = seq(plan.text(" ", "\n", "\t"), Rep(plan.text(), 0, per))
        parts = [seq(Lit("\n\n") if i else None, plan.lit(f"{splitter} {i + 1}", False), Lit("\n"), block)
                 for i in range(n)]
        return seq(*parts)
    if kind == "paragraphs":
        n = plan.body[1]
        per = max(40, limit // max(n, 1))
        para = seq(plan.text(" ", "\n", "\t", "*"), Rep(plan.text("*"), 0, per))
        return seq(para, *(seq(Lit("\n\n***\n\n"), para) for _ in range(n - 1)))
    if kind == "marks":
        _, open_, close, n = plan.body
        if n < 1:
            return Rep(plan.text(), 1, n_max)
        per = max(40, limit // (n + 1))
        free, after = plan.text(open_, close), plan.text(open_, close, *WORD_CHARS)
        mark = seq(plan.lit(open_, False), plan.text(open_, close, "\n", " "),
                   Rep(plan.text(open_, close, "\n"), 0, MARK_CHARS - 1), plan.lit(close, False))
        between = seq(after, Rep(free, 0, per), SPACE)  # a mark is never glued to a word: "On[side]relating"
        return seq(opt(seq(Rep(free, 0, per), SPACE)), mark, *(seq(between, mark) for _ in range(n - 1)),
                   opt(seq(after, Rep(free, 0, n_max))))
    if kind == "keywords":
        words = [plan.lit(w, True) for w in plan.body[1]]
        per = max(40, limit // (len(words) + 1))
        # each a word of its own, after a space and before a non-letter: without that the 135M teacher, forced at
        # the bound, glued them into words ("andegreele", "there'pins")
        return seq(*(seq(Rep(plan.text(), 1, per), SPACE, w, plan.text(*WORD_CHARS)) for w in words),
                   Rep(plan.text(), 0, n_max))
    if kind == "first_word":
        _, n, nth, word = plan.body
        if not 1 <= nth <= n:
            raise _Conflict("no such paragraph")
        per = max(40, limit // n)
        start = plan.text(" ", "\n", "\t", "\r", "'", '"')
        paras = [seq(plan.lit(word.capitalize(), True), Lit(" "), Rep(plan.text("\n"), 1, per)) if i + 1 == nth
                 else seq(start, Rep(plan.text("\n"), 0, per)) for i in range(n)]
        return seq(paras[0], *(seq(Lit("\n\n"), p) for p in paras[1:]))
    if kind == "choice":
        options = [plan.lit(o, False) for o in plan.body[1]]
        if not options:
            raise _Conflict("no options")
        return seq(Alt(tuple(options)), opt(seq(Lit(" "), Rep(plan.text(), 1, n_max // 2 if n_max else None))))
    raise _Conflict(kind)


# ------------------------------------------------------------------ dialects

def dialect(settings) -> str:
    """teacher_dialect, with "auto" resolved: the local server's own dialect, "none" for a remote URL."""
    d = getattr(settings, "teacher_dialect", "auto")
    if d != "auto":
        if d not in DIALECTS:
            raise ValueError(f"teacher_dialect {d!r}: expected auto or one of {', '.join(DIALECTS)}")
        return d
    if settings.teacher_url == "local":
        return "llama.cpp" if settings.teacher_backend == "llama.cpp" else "transformers"
    return "none"


def request_extras(constraint: Constraint | None, dialect: str, tokenizer_folder: str | Path | None = None) -> dict:
    """The fields to add to a chat-completions request so that the server applies the constraint."""
    if constraint is None or dialect == "none":
        return {}
    if dialect == "llama.cpp":
        if constraint.gbnf:
            return {"grammar": constraint.gbnf}
        return {"json_schema": constraint.json_schema} if constraint.json_schema else {}
    if dialect in ("vllm", "vllm-legacy"):
        return _vllm(constraint, legacy=dialect == "vllm-legacy")
    if dialect == "openai":
        if not constraint.json_schema:
            return {}
        name = re.sub(r"[^A-Za-z0-9_-]", "_", constraint.name)[:64]
        return {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": name, "schema": constraint.json_schema, "strict": False}}}
    if dialect == "transformers":
        from curate.synth.guidance import logit_bias
        bias = logit_bias(constraint.name.split("+"), tokenizer_folder)
        return {"logit_bias": bias} if bias else {}
    raise ValueError(f"unknown constraint dialect {dialect!r}: expected one of {', '.join(DIALECTS)}")


def _vllm(c: Constraint, legacy: bool) -> dict:
    """regex first (every vLLM backend takes it), JSON as a schema, GBNF only when there is no regex."""
    if c.json_schema:
        key, value = "json", c.json_schema
    elif c.regex:
        key, value = "regex", c.regex
    elif c.gbnf:
        key, value = "grammar", c.gbnf
    else:
        return {}
    return {f"guided_{key}": value} if legacy else {"structured_outputs": {key: value}}
