"""Every use of moto beyond its public API (``mock_aws`` and its server), in one place.

The local stack, the tests and the benchmarks need a few things moto has no API for: the
records in a table's stream shard and their sequence numbers (the local stack's journal),
forgetting what moto would keep forever (stream records, shard iterators, its registry of
model instances), an item read without a request (the benchmarks' meter), SQS on a test's
clock, one in-process request at a time, and a server dispatcher that remembers hosts.
These are moto's internals: pyproject.toml pins moto's minor version for them, and
tests/unit/test_moto_internals.py checks each one, so an upgrade that moves one fails
there, by name, rather than as a strange failure elsewhere.
"""

from __future__ import annotations

import base64
import calendar
import datetime
import inspect
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler

#: The account moto serves (every local ARN and queue URL names it).
ACCOUNT_ID = DEFAULT_ACCOUNT_ID
#: ``monkeypatch.setattr``, or anything with its signature: the caller decides about undoing.
SetAttr = Callable[[Any, str, Any], None]


# -- S3: the local stack's object files -------------------------------------------------------
def s3_object(bucket: str, key: str) -> bytes | None:
    """An object's bytes as moto stores them (None: no such bucket or object)."""
    from moto.s3.exceptions import MissingBucket
    from moto.s3.models import s3_backends

    try:
        found = s3_backends[ACCOUNT_ID]["aws"].get_object(bucket, key)
    except MissingBucket:
        return None
    return None if found is None else bytes(found.value)


# -- DynamoDB streams: the local stack's journal --------------------------------------------
def stream_shard(table: str, region: str) -> Any:
    """The table's (only) stream shard, or None when it has no stream."""
    from moto.dynamodb.models import dynamodb_backends

    return dynamodb_backends[ACCOUNT_ID][region].get_table(table).stream_shard


def last_sequence(shard: Any) -> int:
    """The sequence number of the shard's last record (its first one less 1 when empty).

    moto numbers records by their index in ``shard.items`` plus ``starting_sequence_number``.
    """
    return shard.starting_sequence_number + len(shard.items) - 1


def records_after(shard: Any, through: int) -> list[dict[str, Any]]:
    """The shard's records after sequence number ``through``, as GetRecords returns them."""
    first = shard.starting_sequence_number
    return [record.to_json() for record in shard.items[max(0, through + 1 - first) :]]


def forget_through(table: str, region: str, through_sequence: str | None) -> None:
    """Forget what moto would keep forever and the local stack no longer needs.

    - Stream records up to ``through_sequence`` (read, and journaled when written):
      DynamoDB keeps them 24 hours, moto forever. Sequence numbers carry on.
    - Shard iterators: every poll takes fresh ones (see pollers.StreamPoller).
    - moto's registry of every model instance ever created (for its dashboard).
    """
    from moto.core.model_instances import reset_model_data
    from moto.dynamodbstreams.models import dynamodbstreams_backends

    reset_model_data()
    dynamodbstreams_backends[ACCOUNT_ID][region].shard_iterators.clear()
    shard = stream_shard(table, region)
    if shard is None or through_sequence is None:
        return
    consumed = int(through_sequence) + 1 - shard.starting_sequence_number
    if consumed > 0:
        del shard.items[:consumed]
        shard.starting_sequence_number += consumed


def stored_item(table: str, key: dict[str, Any], region: str) -> dict[str, Any] | None:
    """An item as stored (DynamoDB JSON), read from moto's memory without a request."""
    from moto.dynamodb.models import dynamodb_backends

    item = dynamodb_backends[ACCOUNT_ID][region].get_item(table, key)
    return item.to_json()["Attributes"] if item else None


def keep_no_stream_records(setattr: SetAttr) -> None:
    """Stop moto from keeping stream records: for runs no one reads the stream of."""
    from moto.dynamodb.models.table import StreamShard

    setattr(StreamShard, "add", lambda self, old, new: None)


def stream_records_without_unused_images(setattr: SetAttr) -> None:
    """Convert only the images a stream record keeps.

    moto converts both the old and the new item of every write to JSON form for its
    stream record, then keeps only those its view type names: a NEW_IMAGE stream (the
    local stack's) threw the old run item away on every snapshot. The record's keys come
    from either item (they share their key), so the one not kept is not handed over.
    """
    from moto.dynamodb.models.table import StreamRecord

    init = StreamRecord.__init__
    if getattr(init, "unused_images_skipped", False):
        return

    def skipping(
        self: Any, table: Any, stream_type: str, event_name: str, old: Any, new: Any, seq: int
    ) -> None:
        if stream_type not in _OLD_IMAGE_VIEWS and new is not None:
            old = None
        elif stream_type not in _NEW_IMAGE_VIEWS and old is not None:
            new = None
        init(self, table, stream_type, event_name, old, new, seq)

    skipping.unused_images_skipped = True  # type: ignore[attr-defined]
    skipping.__wrapped__ = init  # type: ignore[attr-defined]
    setattr(StreamRecord, "__init__", skipping)


_OLD_IMAGE_VIEWS = frozenset({"OLD_IMAGE", "NEW_AND_OLD_IMAGES"})
_NEW_IMAGE_VIEWS = frozenset({"NEW_IMAGE", "NEW_AND_OLD_IMAGES"})


# -- DynamoDB queries: one partition, not the whole table ----------------------------------------
def partition_queries(setattr: SetAttr) -> None:
    """Make a table query (not an index's) read only its own partition.

    moto answers every query by listing *and sorting* every item of the table, then keeping
    the partition's: O(table) per query, so a local stack got slower as its table grew
    (each step of each run adds an item; steps query their run). The answer is the same:
    moto sorts the partition's items by sort key again after picking them.
    """
    from moto.dynamodb.models.table import Table

    query = Table.query
    if getattr(query, "partitioned", False):
        return

    def partitioned(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        index_name = kwargs["index_name"] if "index_name" in kwargs else (args[6] if len(args) > 6 else None)
        if index_name or hash_key is None or not self.range_key_attr:
            return query(self, hash_key, *args, **kwargs)
        partition: Any = _Partition(self, hash_key)  # duck-types the table for the query
        return query(partition, hash_key, *args, **kwargs)

    partitioned.partitioned = True  # type: ignore[attr-defined]
    setattr(Table, "query", partitioned)


class _Partition:
    """A moto table as its query sees it, holding only one partition's items."""

    def __init__(self, table: Any, hash_key: Any) -> None:
        self._table = table
        self._hash_key = hash_key

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)

    def all_items(self) -> list[Any]:
        # ``items`` is a defaultdict: ``get`` does not add the partition when it is empty.
        partition = self._table.items.get(self._hash_key) or {}
        return sorted(partition.values(), key=lambda item: item.range_key)


def index_queries(setattr: SetAttr) -> None:
    """Make an index query list only the items in the queried index partition, unsorted.

    moto lists and sorts every item of the table for an index query too, then keeps those
    whose index keys match and sorts them again: the benchmarks' sweeps over tables of
    tens of thousands of items spent all their time there. The answer is the same: the
    same items match, and moto sorts them after picking them.
    """
    from moto.dynamodb.models.table import Table

    query = Table.query
    if getattr(query, "indexed", False):
        return

    def indexed(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        index_name = kwargs["index_name"] if "index_name" in kwargs else (args[6] if len(args) > 6 else None)
        conditions = kwargs.get("hash_key_conditions") or []
        if not index_name or not conditions:
            return query(self, hash_key, *args, **kwargs)
        partition: Any = _IndexPartition(self, conditions)  # duck-types the table for the query
        return query(partition, hash_key, *args, **kwargs)

    indexed.indexed = True  # type: ignore[attr-defined]
    setattr(Table, "query", indexed)


class _IndexPartition:
    """A moto table as an index query sees it: only the items with the queried index keys."""

    def __init__(self, table: Any, conditions: list[tuple[str, Any]]) -> None:
        self._table = table
        self._wanted = [(name, value.type, value.value) for name, value in conditions]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)

    def all_items(self) -> list[Any]:
        found = []
        for partition in self._table.items.values():
            for item in partition.values() if self._table.range_key_attr else [partition]:
                attrs = item.attrs
                if all(
                    (v := attrs.get(name)) is not None and v.type == kind and v.value == value
                    for name, kind, value in self._wanted
                ):
                    found.append(item)
        return found


# -- DynamoDB responses: JSON as it is ------------------------------------------------------------
#: Services whose results moto builds as plain dicts already in their wire form.
_PLAIN_JSON_SERVICES = frozenset({"dynamodb", "dynamodbstreams"})


def plain_json_responses(setattr: SetAttr) -> None:
    """Answer DynamoDB and DynamoDB Streams requests with their result dumped as JSON.

    moto's response serializer walks every attribute value of every item against the
    operation's output shape, asking for each which names it may go by: in a profile of
    20 runs in flight, a third of the local stack's busy time. Those results are dicts in
    the wire form already; dumping them (bytes as base64, datetimes as epoch seconds to
    the millisecond, the output shape's top-level members only) gives what the serializer
    gives (tests/unit/test_moto_internals.py compares the two). Anything else — an error,
    an object, a value of another type — takes moto's serializer.
    """
    from moto.core.responses import ActionResult

    execute = ActionResult.execute_result
    if getattr(execute, "plain_json", False):
        return

    def plain(self: Any, context: Any) -> Any:
        result = self.result
        if type(result) is dict and context.service_model.service_name in _PLAIN_JSON_SERVICES:
            shape = context.operation_model.output_shape
            members = shape.members if shape is not None else {}
            try:
                body = json.dumps({k: v for k, v in result.items() if k in members}, default=_wire_value)
            except TypeError:
                return execute(self, context)
            version = context.service_model.metadata.get("jsonVersion", "1.0")
            return 200, {"Content-Type": f"application/x-amz-json-{version}"}, body
        return execute(self, context)

    plain.plain_json = True  # type: ignore[attr-defined]
    setattr(ActionResult, "execute_result", plain)


def _wire_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, datetime.datetime):
        seconds = calendar.timegm(value.utctimetuple())
        return seconds + (value.microsecond // 1000) / 1000.0 if value.microsecond else seconds
    raise TypeError(type(value).__name__)


def no_request_id_scans(setattr: SetAttr) -> None:
    """Skip moto's search for an XML ``<RequestId>`` in bodies that have none.

    moto puts the request id into every response body with a regular expression whose
    look-behind is tried at every character: for DynamoDB's JSON answers (a query's
    items) it finds nothing, after scanning all of it (in a profile of 20 runs in
    flight, 3% of the local stack's busy time). A body without the tag is left as it is,
    which is what the substitution gives; the request id headers are added as before.
    """
    from moto.core.responses import BaseResponse

    enrich = BaseResponse.__dict__["_enrich_response"]
    if getattr(enrich, "lean", False):
        return
    original = enrich.__func__

    def lean(headers: dict[str, str], body: Any) -> tuple[dict[str, str], Any]:
        if isinstance(body, str) and "<RequestId>" not in body:
            headers, _ = original(headers, "")
            return headers, body
        return original(headers, body)

    lean.lean = True  # type: ignore[attr-defined]
    setattr(BaseResponse, "_enrich_response", staticmethod(lean))


def parsed_update_expressions(setattr: SetAttr, size: int = 256) -> None:
    """Parse each distinct UpdateExpression once.

    moto parses an UpdateItem's expression twice per request (to check its names and
    values, then to apply it), tokenizing it character by character. The handlers send
    a handful of distinct expressions, so the parsed tree is kept by its text. moto never
    changes a parsed tree: its validator works on a deep copy (checked in
    tests/unit/test_moto_internals.py), so sharing one gives the same answers.
    """
    from functools import lru_cache

    from moto.dynamodb.parsing.expressions import UpdateExpressionParser  # type: ignore[attr-defined]

    make = UpdateExpressionParser.__dict__["make"]
    if getattr(make, "parsed_once", False):
        return
    parse = make.__func__

    @lru_cache(maxsize=size)
    def parsed(expression: str) -> Any:
        return parse(UpdateExpressionParser, expression)

    def make_once(cls: Any, expression: str) -> Any:
        return parsed(expression) if cls is UpdateExpressionParser else parse(cls, expression)

    make_once.parsed_once = True  # type: ignore[attr-defined]
    setattr(UpdateExpressionParser, "make", classmethod(make_once))


def parsed_condition_expressions(setattr: SetAttr, size: int = 256) -> None:
    """Parse each distinct ConditionExpression once, with its values looked up per request.

    moto tokenizes and parses a PutItem's or UpdateItem's ConditionExpression (and a
    Query's FilterExpression) on every request, character by character (in a profile of
    20 runs in flight, 5% of the local stack's busy time). The parse turns the text into
    a tree of nodes, then into the operators that are evaluated against the item. Only
    the tree's ``:value`` leaves depend on the ExpressionAttributeValues; the rest
    depends on the text and the ExpressionAttributeNames, so the tree is kept by those
    two. A request with the same text and names looks up its own values — the same
    lookups in the same order, so a missing value fails as it did — puts them in the
    leaves of a new tree, and builds the operators from it as moto does. Every other
    failure (a syntax error, a reserved word, an unknown name) leaves nothing kept: the
    next request parses again and fails the same way.
    """
    from moto.dynamodb.comparisons import ConditionExpressionParser as Parser

    parse = Parser.parse
    if getattr(parse, "parsed_once", False):
        return
    trees: dict[tuple[str, Any], tuple[Any, tuple[str, ...], list[str], list[str]]] = {}
    value_kind = Parser.Kind.EXPRESSION_ATTRIBUTE_VALUE

    def parse_once(self: Any) -> Any:
        expression, names = self.condition_expression, self.expression_attribute_names
        if type(self) is not Parser or type(expression) is not str or not expression:
            return parse(self)
        try:
            key = (expression, None if names is None else tuple(names.items()))
            kept = trees.get(key)
        except (TypeError, AttributeError):  # names moto would not take either
            return parse(self)
        if kept is None:
            return _parse_and_keep(self, key)
        tree, value_names, names_found, values_found = kept
        values = {name: self._lookup_expression_attribute_value(name) for name in value_names}
        self.expr_attr_names_found.extend(names_found)
        self.expr_attr_values_found.extend(values_found)
        return self._make_op_condition(_with_values(tree, values, value_kind))

    def _parse_and_keep(self: Any, key: tuple[str, Any]) -> Any:
        """moto's parse, noting its value lookups (in order) and its tree of nodes."""
        looked_up: list[str] = []
        roots: list[Any] = []

        def lookup(name: str) -> Any:
            looked_up.append(name)
            return Parser._lookup_expression_attribute_value(self, name)

        def make(node: Any) -> Any:
            if not roots:
                roots.append(node)
            return Parser._make_op_condition(self, node)

        names_before, values_before = len(self.expr_attr_names_found), len(self.expr_attr_values_found)
        self._lookup_expression_attribute_value, self._make_op_condition = lookup, make
        try:
            op = parse(self)
        finally:
            del self._lookup_expression_attribute_value, self._make_op_condition
        if roots:
            if len(trees) >= size:
                trees.clear()
            trees[key] = (
                roots[0],
                tuple(looked_up),
                self.expr_attr_names_found[names_before:],
                self.expr_attr_values_found[values_before:],
            )
        return op

    parse_once.parsed_once = True  # type: ignore[attr-defined]
    parse_once.__wrapped__ = parse  # type: ignore[attr-defined]
    setattr(Parser, "parse", parse_once)


def _with_values(node: Any, values: dict[str, Any], value_kind: str) -> Any:
    """A kept condition tree with this request's values in its ``:value`` leaves."""
    if node.kind == value_kind:
        return node._replace(value=values[node.text])
    if not node.children:
        return node
    return node._replace(children=[_with_values(child, values, value_kind) for child in node.children])


def update_expressions_checked_once(setattr: SetAttr, size: int = 256) -> None:
    """Check an UpdateExpression's shape once per expression, names and table keys.

    moto validates an UpdateItem's expression by walking its tree with ten processors in
    turn, twice when the item is new. The first three only check the expression's shape
    — at most one SET, REMOVE and ADD clause; no two paths that overlap; no key attribute
    updated — and either raise or hand back the tree unchanged. What they look at is the
    parsed tree (the one :func:`parsed_update_expressions` keeps for the expression's
    text, never changed), the ExpressionAttributeNames and the table's key attributes,
    so once they have passed for those three, they pass again: a validation of the same
    ones starts at the fourth processor (in a profile of 20 runs in flight, 2% of the
    local stack's busy time). A check that failed is made again, and fails again.
    """
    from moto.dynamodb.parsing.validators import (
        ActionCountValidator,
        OverlappingPathsValidator,
        UpdateExpressionValidator,
        UpdateHashRangeKeyValidator,
    )

    validate = UpdateExpressionValidator.validate
    if getattr(validate, "checked_once", False):
        return
    init = UpdateExpressionValidator.__init__
    shape_checks = [ActionCountValidator, OverlappingPathsValidator, UpdateHashRangeKeyValidator]
    passed: dict[tuple[int, Any, Any], Any] = {}

    def init_noting_tree(self: Any, expression: Any, *args: Any, **kwargs: Any) -> None:
        init(self, expression, *args, **kwargs)
        self.parsed_tree = expression

    def validate_once(self: Any) -> Any:
        tree, names = self.__dict__.get("parsed_tree"), self.expression_attribute_names
        processors = self.processors
        if type(self) is not UpdateExpressionValidator or tree is None:
            return validate(self)
        if [type(p) for p in processors[: len(shape_checks)]] != shape_checks:
            return validate(self)
        try:
            key = (
                id(tree),
                None if names is None else tuple(names.items()),
                tuple(self.table.table_key_attrs),
            )
            checked = passed.get(key) is tree
        except TypeError:  # names or keys moto would take but that cannot be a key here
            return validate(self)
        node = self.node_to_validate
        for processor in processors[len(shape_checks) :] if checked else processors:
            node = processor.traverse(node)
            if not checked and type(processor) is shape_checks[-1]:
                if len(passed) >= size:
                    passed.clear()
                passed[key] = tree
        return node

    init_noting_tree.__wrapped__ = init  # type: ignore[attr-defined]
    validate_once.checked_once = True  # type: ignore[attr-defined]
    validate_once.__wrapped__ = validate  # type: ignore[attr-defined]
    setattr(UpdateExpressionValidator, "__init__", init_noting_tree)
    setattr(UpdateExpressionValidator, "validate", validate_once)


def validated_copies_made_directly(setattr: SetAttr) -> None:
    """Copy an UpdateExpression's tree for its validation without ``copy.deepcopy``'s protocol.

    moto validates an UpdateItem's expression on a deep copy of its parsed tree (see
    :func:`parsed_update_expressions`), and ``copy.deepcopy`` copies each node through
    its generic reduce-and-reconstruct protocol (in a profile of 20 runs in flight, 3%
    of the local stack's busy time). The tree's nodes are plain objects (no slots, no
    ``__deepcopy__``, ``__reduce__`` or ``__setstate__`` of their own) holding lists,
    strings, numbers and other nodes, each pointing back at its parent: they are copied
    here as ``deepcopy`` copies them — a new object of the same class registered in the
    memo first, then its attributes copied in order, lists as new lists, a shared object
    copied once — and anything else is left to ``deepcopy`` itself, memo and all.
    """
    import copy
    import copyreg

    from moto.dynamodb.parsing import validators
    from moto.dynamodb.parsing.ast_nodes import Node  # type: ignore[attr-defined]

    if getattr(validators.deepcopy, "direct", False):
        return
    deepcopy = copy.deepcopy
    atomic = (str, int, float, bool, type(None))
    plain: dict[type, bool] = {}

    def is_plain(cls: type) -> bool:
        if cls not in plain:
            plain[cls] = (
                issubclass(cls, Node)
                and not any("__slots__" in vars(k) for k in cls.__mro__)
                and all(
                    getattr(cls, name) is getattr(object, name, None)
                    for name in ("__reduce_ex__", "__reduce__", "__getstate__")
                )
                and not hasattr(cls, "__deepcopy__")
                and not hasattr(cls, "__setstate__")
                and cls not in copyreg.dispatch_table
            )
        return plain[cls]

    def copied(value: Any, memo: dict[int, Any]) -> Any:
        if type(value) in atomic:
            return value
        known = memo.get(id(value), memo)
        if known is not memo:
            return known
        if type(value) is list:
            new_list: list[Any] = []
            memo[id(value)] = new_list
            _keep_alive(value, memo)
            new_list.extend(copied(element, memo) for element in value)
            return new_list
        cls: Any = type(value)
        if is_plain(cls):
            node = cls.__new__(cls)  # what copyreg.__newobj__ does
            memo[id(value)] = node
            _keep_alive(value, memo)
            if state := value.__dict__:  # deepcopy copies the dict itself, then sets it
                attrs: dict[str, Any] = {}
                memo[id(state)] = attrs
                _keep_alive(state, memo)
                attrs.update((name, copied(attr, memo)) for name, attr in state.items())
                node.__dict__.update(attrs)
            return node
        return deepcopy(value, memo)

    def direct(value: Any, memo: dict[int, Any] | None = None) -> Any:
        if not is_plain(type(value)):
            return deepcopy(value, memo)
        return copied(value, {} if memo is None else memo)

    direct.direct = True  # type: ignore[attr-defined]
    direct.__wrapped__ = validators.deepcopy  # type: ignore[attr-defined]
    setattr(validators, "deepcopy", direct)


def _keep_alive(value: Any, memo: dict[int, Any]) -> None:
    """What ``copy.deepcopy`` does with what it copied: kept in the memo while it copies."""
    try:
        memo[id(memo)].append(value)
    except KeyError:
        memo[id(memo)] = [value]


def uncopied_query_results(setattr: SetAttr) -> None:
    """Hand a plain table query the items themselves rather than deep copies of them.

    moto deep-copies every item a query found before it projects, filters and answers
    them (in a profile of 20 runs in flight, 3% of the local stack's busy time). For a
    query of the table (no index) without a ProjectionExpression or FilterExpression,
    nothing in between touches them: the Query handler — the only caller, through the
    backend's ``query`` — turns each item's attributes into new plain dicts and lists
    for the answer, which shares nothing with the items but strings, numbers and bytes.
    So the list of items is copied, not the items: the same answer. Any other query, and
    every other copy moto makes in that module, is left to ``copy.deepcopy``.
    """
    import moto.dynamodb.models.table as table_module
    from moto.dynamodb.comparisons import OpDefault
    from moto.dynamodb.models.dynamo_type import Item

    table = table_module.Table
    query = table.query
    if getattr(query, "uncopied", False):
        return
    copies = _QueryCopies(table_module.copy, Item)

    def uncopied(self: Any, *args: Any, **kwargs: Any) -> Any:
        named = dict(zip(_QUERY_PARAMETERS, args, strict=False)) | kwargs
        plain = (
            not named.get("index_name")
            and not named.get("projection_expressions")
            and type(named.get("filter_expression")) in (type(None), OpDefault)
            and not set(named) - set(_QUERY_PARAMETERS)  # no QueryFilter / KeyConditions filters
        )
        if not plain:
            return query(self, *args, **kwargs)
        copies.skip.results = True
        try:
            return query(self, *args, **kwargs)
        finally:
            copies.skip.results = False

    uncopied.uncopied = True  # type: ignore[attr-defined]
    uncopied.__wrapped__ = query  # type: ignore[attr-defined]
    setattr(table_module, "copy", copies)
    setattr(table, "query", uncopied)


#: Table.query's parameters, in order (moto 5.2).
_QUERY_PARAMETERS = (
    "hash_key",
    "range_comparison",
    "range_objs",
    "limit",
    "exclusive_start_key",
    "scan_index_forward",
    "projection_expressions",
    "index_name",
    "consistent_read",
    "filter_expression",
    "hash_key_conditions",
    "range_key_conditions",
)


class _QueryCopies:
    """The ``copy`` module as moto's table module sees it: while a plain query runs on
    this thread, its one deep copy of the list of items found is a copy of the list."""

    def __init__(self, module: Any, item: type) -> None:
        self._module = module
        self._item = item
        self.skip = threading.local()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def deepcopy(self, value: Any, memo: Any = None) -> Any:
        if (
            getattr(self.skip, "results", False)
            and type(value) is list
            and memo is None
            and all(type(item) is self._item for item in value)
        ):
            self.skip.results = False
            return list(value)
        return self._module.deepcopy(value, memo)


def query_items_sized_once(setattr: SetAttr) -> None:
    """Size each item a query looks at once per query, not twice.

    moto's query sizes every item it considers twice — once to check the page's size
    limit, once to add it to the page's size — each time summing the size of every
    attribute, nested ones included (in a profile of 20 runs in flight, 3% of the local
    stack's busy time). A query changes no item, so the second answer is the first:
    while a query runs on a thread, an item's size is remembered (with the item, so its
    id is not reused) and forgotten when the query returns.
    """
    from moto.dynamodb.models.dynamo_type import Item
    from moto.dynamodb.models.table import Table

    query = Table.query
    if getattr(query, "sized_once", False):
        return
    size = Item.size
    sizes = threading.local()

    def remembered_size(self: Any) -> int:
        known = getattr(sizes, "known", None)
        if known is None:
            return size(self)
        found = known.get(id(self))
        if found is None or found[0] is not self:
            found = known[id(self)] = (self, size(self))
        return found[1]

    def sized_once(self: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(sizes, "known", None) is not None:  # a query within a query
            return query(self, *args, **kwargs)
        sizes.known = {}
        try:
            return query(self, *args, **kwargs)
        finally:
            sizes.known = None

    remembered_size.__wrapped__ = size  # type: ignore[attr-defined]
    sized_once.sized_once = True  # type: ignore[attr-defined]
    sized_once.__wrapped__ = query  # type: ignore[attr-defined]
    setattr(Item, "size", remembered_size)
    setattr(Table, "query", sized_once)


def sized_items_once(setattr: SetAttr) -> None:
    """Size each attribute once while moto builds an item, not every attribute per attribute.

    moto stores an item's attributes in a dict that, on every insertion, sums the size of
    every attribute already in it, to refuse an item over DynamoDB's limit: building an
    item of n attributes sizes O(n²) of them (in a profile of 20 runs in flight, 2% of the
    local stack's busy time, all of it from items being built). Here the item is built
    with a running sum of the same sizes, inserting each attribute once the same check
    passes: the same attributes in the same order, and an item over the limit refused
    with the same error at the same attribute. Later insertions (an UpdateItem's SET)
    still go through moto's check.
    """
    from moto.dynamodb.exceptions import ItemSizeTooLarge
    from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict
    from moto.dynamodb.models.utilities import bytesize

    if getattr(Item.__init__, "sized_once", False):
        return
    check = LimitedSizeDict.__setitem__

    def sized_once(self: Any, hash_key: Any, range_key: Any, attrs: dict[str, Any]) -> None:
        self.hash_key = hash_key
        self.range_key = range_key
        self.attrs = stored = LimitedSizeDict()
        if LimitedSizeDict.__setitem__ is not check:
            for key, value in attrs.items():  # another check in place: moto's own way
                stored[key] = DynamoType(value)
            return
        current = 0  # what moto sums over the keys and values already stored
        for key, value in attrs.items():
            typed = DynamoType(value)
            size = typed.size()
            if current + bytesize(key) + size > _ITEM_SIZE_LIMIT:
                raise ItemSizeTooLarge
            dict.__setitem__(stored, key, typed)
            current += bytesize(str(key)) + size

    sized_once.sized_once = True  # type: ignore[attr-defined]
    sized_once.__wrapped__ = Item.__init__  # type: ignore[attr-defined]
    setattr(Item, "__init__", sized_once)


#: moto's item size check refuses an item whose sizes add up to more than this (moto 5.2).
_ITEM_SIZE_LIMIT = 405000


#: The services whose requests :func:`matched_actions_once` routes once (those answered in-process).
_MATCHED_ONCE_SERVICES = frozenset({"dynamodb", "dynamodbstreams", "sqs"})


def matched_actions_once(setattr: SetAttr) -> None:
    """Route a DynamoDB, DynamoDB Streams or SQS request to its action once, not four times.

    moto asks its router which operation a request is for each time it needs the
    action's name — setting up the request, parsing its parameters, calling the action,
    serializing the answer — and each time the router works out the request's protocol
    and matches it again (in a profile of 20 runs in flight, 2% of the local stack's busy
    time). The match depends on the request only (its method, path, headers and body),
    which nothing changes once moto has set the request up, so the first answer is kept
    with the handler (made afresh for every request), for that request: the same
    operation's name, and the same path parameters, in a new dict each time as the
    router gives. A request that matches nothing is matched again each time.
    """
    from moto.core.responses import BaseResponse

    match = BaseResponse._get_action_from_request
    if getattr(match, "matched_once", False):
        return

    def matched_once(self: Any, request: Any) -> Any:
        if self.service_name not in _MATCHED_ONCE_SERVICES:
            return match(self, request)
        kept = self.__dict__.get("_matched_action")
        if kept is not None and kept[0] is request:
            self.uri_match = dict(kept[2])
            return kept[1]
        name = match(self, request)
        if name is not None:
            self.__dict__["_matched_action"] = (request, name, dict(self.uri_match))
        return name

    matched_once.matched_once = True  # type: ignore[attr-defined]
    matched_once.__wrapped__ = match  # type: ignore[attr-defined]
    setattr(BaseResponse, "_get_action_from_request", matched_once)


def listed_methods_once(setattr: SetAttr) -> None:
    """Answer "is this action one of the response class's methods?" without listing them all.

    For every request, moto lists every function of the response class (with
    ``inspect.getmembers``: ``getattr`` for each of some 200 names, then a sort) only to
    ask whether the action's name is among them (in a profile of 20 runs in flight, 3%
    of the local stack's busy time). The list is now a view that answers that question
    for one name as ``getmembers`` would: the name is in the class's ``dir`` (the
    ``__dict__`` of a class in its MRO) and ``getattr`` gives a function. It is asked
    again each time, so a method added to or removed from the class later counts as it
    did; anything else asked of the view lists the class as moto does.
    """
    import moto.core.responses as responses

    listed = responses.method_names_from_class
    if getattr(listed, "by_lookup", False):
        return

    def method_names(clazz: object) -> Any:
        return _MethodNames(clazz, listed)

    method_names.by_lookup = True  # type: ignore[attr-defined]
    method_names.__wrapped__ = listed  # type: ignore[attr-defined]
    setattr(responses, "method_names_from_class", method_names)


class _MethodNames(Sequence[str]):
    """A class's function names as ``method_names_from_class`` lists them, listed only when
    more than membership is asked."""

    def __init__(self, clazz: Any, listed: Callable[[object], list[str]]) -> None:
        self._clazz = clazz
        self._listed = listed
        self._names: list[str] | None = None

    def __contains__(self, name: object) -> bool:
        clazz = self._clazz
        if type(name) is not str or not isinstance(clazz, type) or type(clazz).__dir__ is not type.__dir__:
            return name in self._list()
        owners = [k for k in clazz.__mro__ if name in vars(k)]
        if not owners:
            return False
        try:
            value = getattr(clazz, name)
        except AttributeError:  # getmembers then takes the first class's own entry
            value = vars(owners[0])[name]
        return inspect.isfunction(value)

    def _list(self) -> list[str]:
        if self._names is None:
            self._names = self._listed(self._clazz)
        return self._names

    def __getitem__(self, index: Any) -> Any:
        return self._list()[index]

    def __len__(self) -> int:
        return len(self._list())

    def __iter__(self) -> Iterator[str]:
        return iter(self._list())


# -- in-process moto (mock_aws): tests ---------------------------------------------------------
def sqs_on_clock(setattr: SetAttr, clock: Callable[[], float]) -> None:
    """Run moto's SQS (delays, visibility timeouts, receive counts) on ``clock``."""
    import moto.sqs.models as sqs_models

    unix_time = sqs_models.unix_time
    setattr(sqs_models, "unix_time", lambda dt=None: clock() if dt is None else unix_time(dt))
    setattr(
        sqs_models,
        "unix_time_millis",
        lambda dt=None: clock() * 1000.0 if dt is None else unix_time(dt) * 1000.0,
    )


def one_request_at_a_time(setattr: SetAttr) -> None:
    """Serialize the requests in-process moto answers (it is not thread-safe; real AWS
    serializes the writes to an item, so this is the faithful model for race tests)."""
    from moto.core.botocore_stubber import BotocoreStubber

    lock = threading.RLock()
    process_request = BotocoreStubber.process_request

    def serialized(self: Any, request: Any) -> Any:
        with lock:
            return process_request(self, request)

    setattr(BotocoreStubber, "process_request", serialized)


# -- moto's server: the local stack ------------------------------------------------------------
#: The JSON-protocol services the local stack answers in-process without werkzeug and Flask,
#: by the prefix of their ``X-Amz-Target``: moto's module for each (its ``urls`` names the
#: response class's dispatcher, as moto's own ``mock_aws`` finds it).
_DIRECT_SERVICES = {
    "DynamoDB_20120810": "moto.dynamodb.urls",
    "DynamoDBStreams_20120810": "moto.dynamodbstreams.urls",
    "AmazonSQS": "moto.sqs.urls",
}


def direct_dispatchers() -> dict[str, Callable[..., Any]]:
    """``X-Amz-Target`` prefix → moto's dispatcher for that service (what its Flask view
    calls): ``dispatcher(request, full_url, headers)`` answers ``(status, headers, body)``."""
    import importlib

    dispatchers: dict[str, Callable[..., Any]] = {}
    for prefix, module in _DIRECT_SERVICES.items():
        (dispatch, *_) = importlib.import_module(module).url_paths.values()
        dispatchers[prefix] = dispatch
    return dispatchers


#: The WSGI environ werkzeug's EnvironBuilder makes of a request line with no headers and
#: no body, by (method, URL): what each request to that URL starts from.
_BARE_ENVIRONS: dict[tuple[str, str], dict[str, Any]] = {}
_BARE_ENVIRONS_KEPT = 64
#: Headers EnvironBuilder sets from elsewhere (the URL, the body's length): such a
#: request is built by moto's own ``Request.from_primitives``.
_ENVIRON_SET_HEADERS = frozenset({"host"})
#: Environ keys each request sets (the body, moto's key): not kept in the bare environ.
_ENVIRON_PER_REQUEST = frozenset(
    {"CONTENT_TYPE", "CONTENT_LENGTH", "wsgi.input", "werkzeug.request", "moto.preserved_header_names"}
)
#: Headers that never reach the environ: EnvironBuilder measures the body itself, and
#: moto's ``from_primitives`` drops Transfer-Encoding (the body is whole).
_ENVIRON_DROPPED_HEADERS = frozenset({"content-length", "transfer-encoding"})


def moto_request(method: str, url: str, headers: Any, body: bytes) -> Any:
    """moto's ``Request.from_primitives(method, url, headers, body)``, with the WSGI
    environ werkzeug's EnvironBuilder makes copied from the one it made for the same
    method and URL, headers and body added — EnvironBuilder's own work was a twentieth
    of the moto process's time with 20 runs in flight, the same for every request to one
    endpoint (tests/unit/test_moto_internals.py compares the two environs)."""
    import io

    from moto.core.request import PRESERVED_HEADER_NAMES_ENVIRON_KEY, Request

    items = [
        (str(k), v.decode() if isinstance(v, bytes) else str(v))
        for k, v in headers.items()
        if str(k).lower() not in _ENVIRON_DROPPED_HEADERS
    ]
    if any(k.lower() in _ENVIRON_SET_HEADERS or k.lower().startswith("x-amz-meta-") for k, _ in items):
        return Request.from_primitives(method, url, headers, body)
    bare = _BARE_ENVIRONS.get((method, url))
    if bare is None:
        made = Request.from_primitives(method, url, {}, b"").environ
        bare = {k: v for k, v in made.items() if k not in _ENVIRON_PER_REQUEST}
        if len(_BARE_ENVIRONS) >= _BARE_ENVIRONS_KEPT:
            _BARE_ENVIRONS.clear()
        _BARE_ENVIRONS[(method, url)] = bare
    # In EnvironBuilder's order: the request line's keys, the body's, the headers, then
    # moto's own key.
    environ = dict(bare)
    environ["wsgi.input"] = io.BytesIO(body)
    content_type = [value for key, value in items if key.lower() == "content-type"]
    if content_type:
        environ["CONTENT_TYPE"] = content_type[-1]
    if body:
        environ["CONTENT_LENGTH"] = str(len(body))
    for key, value in items:
        name = key.upper().replace("-", "_")
        if name != "CONTENT_TYPE":
            environ[f"HTTP_{name}"] = value
    environ[PRESERVED_HEADER_NAMES_ENVIRON_KEY] = {}
    environ.setdefault("CONTENT_LENGTH", "0")  # moto's, for a request with no body
    return Request(environ)


def prepare_directly(
    dispatcher: Callable[..., Any], method: str, url: str, headers: Any, body: bytes
) -> Callable[[], tuple[int, dict[str, str], bytes]]:
    """One request for ``dispatcher``, answered as moto's server answers it (the request
    as its WSGI server builds it, an error as its Flask app renders it) without werkzeug's
    routing, Flask's request context or the response object — in two halves: this one
    reads the request (its body parsed against the operation's model, which touches no
    backend), the function it returns answers it (what a lock around the backend must
    cover, and no more).

    moto's ``dispatch`` is ``cls()._dispatch(...)``: ``setup_class`` (the reading) then
    ``call_action``; a dispatcher that is not a response class's is called whole. The
    function returned has the request's parameters as moto parsed them as ``params``
    (None when it has none).
    """
    from moto.core.exceptions import HTTPException
    from moto.core.responses import BaseResponse

    request = moto_request(method, url, headers, body)
    request.from_wsgi_server = True  # answered as moto's server answers
    responses = getattr(dispatcher, "__self__", None)

    def rendered(call: Callable[[], Any]) -> tuple[int, dict[str, str], bytes]:
        try:
            status, answer_headers, content = call()
        except HTTPException as exc:
            status, answer_headers, content = exc.code or 500, dict(exc.get_headers()), exc.get_body()
        if isinstance(content, str):
            content = content.encode()
        return int(status), {str(k): str(v) for k, v in dict(answer_headers).items()}, content

    if not (isinstance(responses, type) and issubclass(responses, BaseResponse)):
        return lambda: rendered(lambda: dispatcher(request, request.raw_url, dict(request.headers)))
    handler = responses()
    try:
        handler.setup_class(request, request.raw_url, dict(request.headers))
    except HTTPException as exc:
        failure = exc

        def fail() -> Any:
            raise failure

        return lambda: rendered(fail)

    def answer() -> tuple[int, dict[str, str], bytes]:
        return rendered(handler.call_action)

    answer.params = getattr(handler, "params", None)  # type: ignore[attr-defined]
    return answer


# -- SQS: no scan of the whole queue per message --------------------------------------------------
def sqs_without_scans(setattr: SetAttr) -> None:
    """Make moto's SQS answer without rescanning the queue for every message it hands out.

    moto checks each received message's retention period by computing *every* queue
    attribute, three of which count the queue's messages one by one, each against the
    clock as a datetime: a receive cost O(queue²) (in a profile of 20 runs in flight, a
    tenth of the local stack's busy time). The period is the queue's own attribute; the
    clock is ``time.time()`` (moto's datetime clock gives the same value, for freezegun's
    sake). A clock a test put in place (:func:`sqs_on_clock`) is left as it is.
    """
    import time

    import moto.sqs.models as sqs_models
    from moto.core.utils import unix_time, unix_time_millis

    backend = sqs_models.SQSBackend
    original = backend.is_message_valid_based_on_retention_period
    if not getattr(original, "without_scans", False):

        def valid(self: Any, queue_name: str, message: Any) -> bool:
            retention_period = int(self.get_queue(queue_name).message_retention_period)
            return bool(retention_period + message.sent_timestamp / 1000 > sqs_models.unix_time())

        valid.without_scans = True  # type: ignore[attr-defined]
        valid.__wrapped__ = original  # type: ignore[attr-defined]
        setattr(backend, "is_message_valid_based_on_retention_period", valid)
    if sqs_models.unix_time is unix_time:
        setattr(sqs_models, "unix_time", lambda dt=None: time.time() if dt is None else unix_time(dt))
    if sqs_models.unix_time_millis is unix_time_millis:
        setattr(
            sqs_models,
            "unix_time_millis",
            lambda dt=None: time.time() * 1000.0 if dt is None else unix_time_millis(dt),
        )


def sqs_prompt_long_polls(setattr: SetAttr) -> None:
    """Make a long poll return a message as soon as its delay or visibility timeout ends.

    moto's long poll waits for a new message for up to a second at a time, so a message
    that only *became* visible (a delayed one, or one whose visibility timeout ran out)
    waited up to a second more; SQS hands it out as it becomes visible. The wait now ends
    when the next such message is due, or a new one arrives, whichever comes first.
    """
    import moto.sqs.models as sqs_models

    queue = sqs_models.Queue
    if getattr(queue.wait_for_messages, "prompt", False):
        return

    def wait_for_messages(self: Any, timeout: int) -> None:
        with self._messages_lock:
            now = sqs_models.unix_time_millis()
            due = [
                moment
                for message in self._messages
                for moment in (message.delayed_until, message.visible_at)
                if moment > now
            ]
            wait = min(timeout, (min(due) - now) / 1000.0 + 0.001) if due else timeout
            self._messages_lock.wait_for(lambda: self.messages, timeout=wait)

    wait_for_messages.prompt = True  # type: ignore[attr-defined]
    setattr(queue, "wait_for_messages", wait_for_messages)


class QuietRequestHandler(MotoRequestHandler):
    """moto's request handler without a terminal line per AWS call."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


class Dispatcher(DomainDispatcherApplication):
    """moto's dispatcher, remembering which backend serves each host: moto finds out by
    listing its own package directory for every request (in a profile with 20 runs in
    flight, ~8% of the local stack's busy time)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._backends: dict[str | None, Any] = {}

    def get_backend_for_host(self, host: str | None) -> Any:
        if host not in self._backends:
            self._backends[host] = super().get_backend_for_host(host)
        return self._backends[host]
