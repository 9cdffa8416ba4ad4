"""The sidecar's YAML, read as untrusted input: no anchors or aliases, no deep nesting, no huge integers,
JSON's kinds of values only; every refusal and syntax error says where (line and column) in plain words."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Protocol

import yaml

from i2v_watcher.errors import JobError

# Limits that keep every sidecar a small, flat document: composing and constructing are recursive (a
# deep nesting would exhaust the stack), and Python refuses to convert integers over 4300 digits.
MAX_DEPTH = 32
MAX_INT_DIGITS = 30
_YAML_TAG = "tag:yaml.org,2002:"
_TIMESTAMP = f"{_YAML_TAG}timestamp"
# Types JSON has no word for, which the metadata could not record: a sidecar holds text, numbers,
# true/false/null, lists and mappings only.
_REFUSED_TAGS = [_TIMESTAMP] + [f"{_YAML_TAG}{kind}" for kind in ("binary", "set", "omap", "pairs")]


class _Position(Protocol):
    """A YAML mark, from the pure-Python or the libyaml parser."""

    line: int
    column: int


class _Refused(Exception):
    """Well-formed YAML that a sidecar may not use, with where it is."""

    def __init__(self, message: str, mark: _Position | None) -> None:
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        super().__init__(message + where)


def _resolvers_without(unwanted: str) -> dict[Any, list[tuple[str, Any]]]:
    return {first: [(tag, regexp) for tag, regexp in resolvers if tag != unwanted]
            for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader without anchors/aliases (alias bombs), with duplicate keys as errors, nesting and integer
    sizes bounded, and only JSON's kinds of values."""

    # A copy without the timestamp resolver, so a date-looking value (`prompt: 2026-02-30`) stays the text
    # it is, and yaml.SafeLoader itself is left as every other user of PyYAML expects it.
    yaml_implicit_resolvers = _resolvers_without(_TIMESTAMP)

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise _Refused("anchors and aliases (&, *) are not allowed in a sidecar", event.start_mark)
        if not isinstance(event, yaml.CollectionStartEvent):
            return super().compose_node(parent, index)
        # Counted while composing, before the recursion that a deep nesting would run out of stack in.
        if self._depth >= MAX_DEPTH:
            raise _Refused(f"lists and mappings nested more than {MAX_DEPTH} levels deep are not allowed",
                           event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, yaml.MappingNode):  # a `!!map` tag on a scalar or a list
            return super().construct_mapping(node, deep=deep)  # raises its own ConstructorError
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self._key(key_node, deep)
            if key in seen:
                raise _Refused(f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def _key(self, node: yaml.Node, deep: bool) -> Hashable:
        # `? [a, b]`, `{[a]: 1}` and `? !!seq x` make keys Python cannot hash.
        if isinstance(node, yaml.ScalarNode):
            key = self.construct_object(node, deep=deep)
            if isinstance(key, Hashable):
                return key
        raise _Refused("a key must be a single name, not a list or a mapping", node.start_mark)

    def construct_bounded_int(self, node: yaml.ScalarNode) -> int:
        text = self.construct_scalar(node)
        if sum(char not in "+-_:" for char in str(text)) > MAX_INT_DIGITS:
            raise _Refused(f"integers of more than {MAX_INT_DIGITS} digits are not allowed", node.start_mark)
        value: int = self.construct_yaml_int(node)
        return value

    def refuse_tag(self, node: yaml.Node) -> None:
        tag = node.tag.replace(_YAML_TAG, "!!")
        raise _Refused(f"{tag} values are not allowed in a sidecar: use text, numbers, true/false, lists "
                       "and mappings", node.start_mark)


# add_constructor copies the table into the subclass on first use: yaml.SafeLoader is not changed.
_NoAliasLoader.add_constructor(f"{_YAML_TAG}int", _NoAliasLoader.construct_bounded_int)
for _tag in _REFUSED_TAGS:
    _NoAliasLoader.add_constructor(_tag, _NoAliasLoader.refuse_tag)


# PyYAML's words for where a problem started, in a sidecar writer's words.
_CONTEXTS = {"while parsing a flow sequence": "in the [ list that starts",
             "while parsing a flow mapping": "in the { mapping that starts",
             "while parsing a block mapping": "in the mapping that starts",
             "while parsing a block collection": "in the list that starts",
             "while scanning a quoted scalar": "in the quoted text that starts",
             "while scanning a simple key": "in the key that starts",
             "while scanning a block scalar": "in the text block that starts"}
QUOTING = ('put a value in quotes when it holds ": " or " #", or starts with one of [ { * & ! | > % @ ` '
           "or a quote")
Written = dict[tuple[str, ...], str]


def load_yaml(data: bytes, source: str = "the sidecar") -> object:
    """Untrusted YAML, read with the sidecar rules (no aliases, no deep nesting, JSON kinds only)."""
    return load_yaml_texts(data, source)[0]


def load_yaml_texts(data: bytes, source: str = "the sidecar") -> tuple[object, Written]:
    """load_yaml, and the text each scalar was written as, by its path (`yes` where YAML read true),
    for the advice to quote it. `source` is what the messages call the document (the sidecar a.yaml)."""
    try:
        loader = _NoAliasLoader(data.decode("utf-8-sig"))
        try:
            node = loader.get_single_node()
            value = None if node is None else loader.construct_document(node)
        finally:
            loader.dispose()
    except UnicodeDecodeError as exc:
        raise JobError(f"{source} is not UTF-8 text: {exc}", stage="sidecar",
                       hint="save it as UTF-8 (most editors offer it under Save As, Encoding)") from exc
    except _Refused as exc:
        raise JobError(f"{source} is refused: {exc}", stage="sidecar") from exc
    except yaml.MarkedYAMLError as exc:
        raise JobError(f"{source} is not valid YAML: {describe_yaml_error(exc)}", stage="sidecar",
                       hint=_syntax_hint(str(exc.problem or ""))) from exc
    except yaml.YAMLError as exc:
        raise JobError(f"{source} is not valid YAML: {exc}", stage="sidecar") from exc
    return value, _texts(node, ())


def describe_yaml_error(exc: yaml.MarkedYAMLError) -> str:
    """`line 3, column 4: expected ',' or ']', but got ':' (in the [ list that starts at line 2,
    column 13)`: where, what, and where the unclosed thing began; never `in "<unicode string>"`."""
    mark = exc.problem_mark or exc.context_mark
    text = (f"line {mark.line + 1}, column {mark.column + 1}: " if mark else "") + str(exc.problem or
                                                                                    exc.context or "")
    if exc.problem and exc.context:
        context = _CONTEXTS.get(str(exc.context), str(exc.context))
        began = exc.context_mark
        at = f" at line {began.line + 1}, column {began.column + 1}" if began is not None else ""
        text += f" ({context}{at})"
    return text


def _syntax_hint(problem: str) -> str:
    if "mapping values are not allowed" in problem:
        return 'a value that holds ": " must be in quotes: prompt: "a fox: running"'
    if "\\t" in problem or "\t" in problem:
        return "indent with spaces: YAML does not allow tabs"
    if "constructor" in problem:
        return "tags (!!python/..., !something) are not allowed: write plain values"
    return QUOTING + "; close every [, { and quote"


def _texts(node: yaml.Node | None, path: tuple[str, ...]) -> Written:
    if isinstance(node, yaml.ScalarNode):
        return {path: str(node.value)}
    found: Written = {}
    if isinstance(node, yaml.SequenceNode):
        for index, child in enumerate(node.value):
            found.update(_texts(child, (*path, str(index))))
    elif isinstance(node, yaml.MappingNode):
        for key, child in node.value:
            if isinstance(key, yaml.ScalarNode):
                found.update(_texts(child, (*path, str(key.value))))
    return found
