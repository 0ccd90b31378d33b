"""Answer grammars for the transformers backend (xgrammar EBNF) and their compiled cache: the
events (with alert rules), a second look's yes/no, and a recording's summary."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import structlog

from daemon.engine import prompts

log = structlog.get_logger(__name__)

# Compiling the answer grammar against a 151k-token vocabulary is the slow part of start-up; a
# process that builds a second analyzer for the same model and schema (a reload, tests) reuses it.
# Alert rules add one grammar per set of rules that apply to a recording, and the second look one.
_GRAMMARS: dict[tuple[str, str | None, int, str], Any] = {}
_TOKENIZERS: dict[tuple[str, str | None, int], Any] = {}


_TEXT_CHAR = r'[^"\\\x00-\x1f]'


def event_grammar(
    max_events: int,
    label_chars: int,
    description_chars: int,
    rules: Sequence[str] = (),
    reason_chars: int = 160,
) -> str:
    """EBNF for the answer that `prompts.event_schema` describes, in json.dumps' compact layout.

    Why not compile the schema itself: xgrammar checks the schema's bounded-string `pattern` at
    decode time, 24-37 ms of CPU per generated token, while the same bounds written as EBNF
    repetitions are precomputed at compile time (0.3 ms per token, 3-6 s once). The grammar admits a
    subset of the schema: keys in schema order, no whitespace runs, and times as plain non-negative
    decimals with at most 7 integer and 6 fractional digits, so a weak model cannot loop on digits
    ("600.6666...") until max_new_tokens and lose the chunk.

    With `rules` (alert rule names, slugs) the events are followed by "rules": one verdict per
    rule, in the given order, no other: `{"happened": false}` or `{"happened": true, "start_s":
    .., "end_s": .., "why": ".."}`. Without rules the grammar is exactly the events-only one.
    """
    more = f' (", " event){{0,{max_events - 1}}}' if max_events > 1 else ""
    if rules:
        verdicts = ' ", " '.join(f'"\\"{name}\\": " verdict' for name in rules)
        root = [
            'root ::= "{\\"events\\": [" (event'
            + more
            + ')? "], \\"rules\\": {" '
            + verdicts
            + ' "}}"',
            'verdict ::= "{\\"happened\\": false}" | "{\\"happened\\": true, \\"start_s\\": " '
            'seconds ", \\"end_s\\": " seconds ", \\"why\\": \\"" why "\\"}"',
            f"why ::= {_TEXT_CHAR}{{0,{reason_chars}}}",
        ]
    else:
        root = ['root ::= "{\\"events\\": [" (event' + more + ')? "]}"']
    return "\n".join(
        [
            *root,
            'event ::= "{\\"start_s\\": " seconds ", \\"end_s\\": " seconds'
            ' ", \\"label\\": \\"" label "\\", \\"description\\": \\"" description "\\"}"',
            f"label ::= {_TEXT_CHAR}{{0,{label_chars}}}",
            f"description ::= {_TEXT_CHAR}{{0,{description_chars}}}",
            'seconds ::= ("0" | [1-9] [0-9]{0,6}) ("." [0-9]{1,6})?',
        ]
    )


def verify_grammar(reason_chars: int) -> str:
    """EBNF for a second look's answer (`prompts.verify_schema`): one yes/no and its reason."""
    return "\n".join(
        [
            'root ::= "{\\"happened\\": " ("true" | "false") ", \\"reason\\": \\"" reason "\\"}"',
            f"reason ::= {_TEXT_CHAR}{{0,{reason_chars}}}",
        ]
    )


def _compile_grammar(
    tokenizer: Any,
    vocab_size: int,
    bounds: tuple[int, int, int],
    model: str,
    revision: str | None,
    rules: Sequence[str] = (),
    reason_chars: int = 160,
) -> Any:
    schema = prompts.event_schema(*bounds, rules=rules, reason_chars=reason_chars)
    return _compile(
        tokenizer,
        vocab_size,
        model,
        revision,
        prompts.schema_key(schema),
        lambda: event_grammar(*bounds, rules=rules, reason_chars=reason_chars),
        bounds=bounds,
        rules=len(rules),
    )


def _compile(
    tokenizer: Any,
    vocab_size: int,
    model: str,
    revision: str | None,
    schema_key: str,
    ebnf: Any,
    **what: Any,
) -> Any:
    import xgrammar as xgr

    key = (model, revision, vocab_size, schema_key)
    if key in _GRAMMARS:
        return _GRAMMARS[key]
    started = time.perf_counter()
    info = _TOKENIZERS.get((model, revision, vocab_size))
    if info is None:
        # The model's vocabulary is padded past the tokenizer's; the mask must cover every logit.
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        _TOKENIZERS[(model, revision, vocab_size)] = info
    compiler = xgr.GrammarCompiler(info, cache_enabled=False)
    grammar = compiler.compile_grammar(ebnf())
    _GRAMMARS[key] = grammar
    log.info("grammar_compiled", seconds=round(time.perf_counter() - started, 2), **what)
    return grammar


def summary_grammar(
    max_chapters: int,
    max_key_events: int,
    title_chars: int,
    text_chars: int,
    chapter_title_chars: int,
) -> str:
    """EBNF for a summary answer (`engine.summary.summary_schema`), in json.dumps' compact
    layout: title, summary, chapters (times as in the events grammar), key event ids."""

    def up_to(item: str, n: int) -> str:
        more = f' (", " {item}){{0,{n - 1}}}' if n > 1 else ""
        return f"({item}{more})?" if n > 0 else '""'

    return "\n".join(
        [
            'root ::= "{\\"title\\": \\"" title "\\", \\"summary\\": \\"" text '
            '"\\", \\"chapters\\": [" '
            + up_to("chapter", max_chapters)
            + ' "], \\"key_events\\": [" '
            + up_to("id", max_key_events)
            + ' "]}"',
            'chapter ::= "{\\"start_s\\": " seconds ", \\"end_s\\": " seconds'
            ' ", \\"title\\": \\"" ctitle "\\"}"',
            f"title ::= {_TEXT_CHAR}{{0,{title_chars}}}",
            f"text ::= {_TEXT_CHAR}{{1,{text_chars}}}",
            f"ctitle ::= {_TEXT_CHAR}{{0,{chapter_title_chars}}}",
            'seconds ::= ("0" | [1-9] [0-9]{0,6}) ("." [0-9]{1,6})?',
            "id ::= [1-9] [0-9]{0,11}",
        ]
    )
