"""The :class:`~engine.ports.RunStore` on one DynamoDB table (layout: dynamodb_codec.py).

The step invariant rests on :meth:`DynamoRunStore.commit_step`: one TransactWriteItems
that moves the run from step k to k+1 only if it is still running at k, and puts log
entry k only if it does not exist. Reads of a run are strongly consistent, because a
step handler must see the commit of the step before it.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Iterable
from typing import Any

from engine.errors import StoreUnavailableError
from engine.ports import GraphRecord, RunRecord, StepCommit
from engine.step import TERMINAL
from functions.aws import dynamodb_codec as codec
from functions.aws.adapter import AwsAdapter

GSI = "gsi1"
#: Past these, one ``SET #state.#k = :v`` per changed key would break DynamoDB's 4 KB
#: expression limit; the commit then rewrites the whole state map instead.
MAX_KEYED_UPDATES = 100
MAX_EXPRESSION_CHARS = 3500
#: BatchGetItem takes at most 100 keys per call.
BATCH_GET_KEYS = 100


class DynamoRunStore(AwsAdapter):
    """Graphs, runs and log entries in one table; the low-level client is built on first use."""

    def __init__(self, table_name: str, client_factory: Callable[[], Any]) -> None:
        super().__init__(client_factory)
        self.table_name = table_name

    # -- graphs -------------------------------------------------------------------------
    def put_graph(self, graph: GraphRecord) -> None:
        self._put_new(codec.graph_item(graph))

    def get_graph(self, graph_id: str) -> GraphRecord | None:
        item = self._get(codec.graph_key(graph_id))
        return codec.graph_from_item(item) if item else None

    def list_graphs(self, limit: int = 50, after: str | None = None) -> tuple[list[GraphRecord], str | None]:
        """Newest first. The token is opaque (the index key of the page's last graph)."""
        if limit <= 0:
            return [], None
        params: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": GSI,
            "KeyConditionExpression": "gsi1pk = :pk",
            "ExpressionAttributeValues": {":pk": codec.S(codec.GRAPHS_GSI_PK)},
            "ScanIndexForward": False,
        }
        if after is not None:
            start = _graph_index_start(after)
            if start is None:
                return [], None
            params["ExclusiveStartKey"] = start
        # One more than asked for says whether there is a next page.
        found = self._query(params, limit + 1)
        page = found[:limit]
        graphs = [codec.graph_from_item(item) for item in self._batch_get(list(map(_table_key, page)))]
        token = _encode_token(page[-1]["gsi1sk"]["S"]) if len(found) > limit else None
        return graphs, token

    # -- runs ---------------------------------------------------------------------------
    def create_run(self, run: RunRecord) -> None:
        self._put_new(codec.run_item(run))

    def get_run(self, run_id: str) -> RunRecord | None:
        item = self._get(codec.run_key(run_id))
        return codec.run_from_item(item) if item else None

    def commit_step(self, commit: StepCommit) -> None:
        update = _commit_update(commit, self._whole_state(commit))
        self._call(
            "transact_write_items",
            TransactItems=[
                {"Update": {"TableName": self.table_name, "Key": codec.run_key(commit.run_id), **update}},
                {
                    "Put": {
                        "TableName": self.table_name,
                        "Item": codec.log_item(
                            commit.run_id, commit.expected_step, commit.log, commit.expires_at
                        ),
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
            ],
        )

    def _whole_state(self, commit: StepCommit) -> dict[str, str] | None:
        """The merged state map when a keyed update would be too big, else None.

        Reading first is safe: the commit's condition (running at step k) fails if the
        state changed since, because every state change advances the step.
        """
        if len(commit.update) <= MAX_KEYED_UPDATES and _keyed_chars(commit.update) <= MAX_EXPRESSION_CHARS:
            return None
        run = self.get_run(commit.run_id)
        return {**(run.state if run else {}), **commit.update}

    def list_logs(self, run_id: str, after: int = -1, limit: int = 1000) -> list[dict[str, Any]]:
        if limit <= 0:
            return []
        params = {
            "TableName": self.table_name,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :first AND :last",
            "ExpressionAttributeValues": {
                ":pk": codec.S(f"RUN#{run_id}"),
                ":first": codec.S(codec.log_sk(max(after + 1, 0))),
                ":last": codec.S(codec.LOG_LAST_SK),
            },
            "ConsistentRead": True,
        }
        return [codec.log_from_item(item) for item in self._query(params, limit)]

    def finish_run(
        self,
        run_id: str,
        *,
        status: str,
        error: dict[str, Any] | None,
        now: str,
        expected_step: int | None = None,
    ) -> None:
        if status not in TERMINAL:
            raise ValueError(f"not a terminal status: {status!r}")
        condition = "#status = :running"
        values = {
            ":running": codec.S("running"),
            ":status": codec.S(status),
            ":error": codec.json_or_null(error),
            ":now": codec.S(now),
        }
        if expected_step is not None:
            condition += " AND #step = :k"
            values[":k"] = codec.N(expected_step)
        self._call(
            "update_item",
            TableName=self.table_name,
            Key=codec.run_key(run_id),
            UpdateExpression=(
                "SET #status = :status, #error = :error, finished_at = :now, updated_at = :now "
                "REMOVE #cursor, gsi1pk, gsi1sk"
            ),
            ConditionExpression=condition,
            ExpressionAttributeNames={
                "#status": "status",
                "#error": "error",
                "#cursor": "cursor",
                **({"#step": "step"} if expected_step is not None else {}),
            },
            ExpressionAttributeValues=values,
        )

    def stalled_runs(self, due_before: float, limit: int = 100) -> list[tuple[str, int]]:
        """Running runs due before the cut-off, oldest first.

        The index is eventually consistent and keys runs by the bucket of their due
        time, so candidates are re-read from the table and kept only if really due.
        """
        if limit <= 0:
            return []
        due: list[RunRecord] = []
        for shard in range(codec.RUNNING_SHARDS):
            due += self._stalled_in_shard(shard, due_before, limit)
        due.sort(key=lambda run: run.next_at)
        return [(run.run_id, run.step) for run in due[:limit]]

    def _stalled_in_shard(self, shard: int, due_before: float, limit: int) -> list[RunRecord]:
        """The shard's ``limit`` runs due first (more on ties: a bucket is read whole)."""
        params: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": GSI,
            "KeyConditionExpression": "gsi1pk = :pk AND gsi1sk <= :due",
            "ExpressionAttributeValues": {
                ":pk": codec.S(f"RUNNING#{shard}"),
                ":due": codec.S(codec.due_key(due_before)),
            },
        }
        due: list[RunRecord] = []
        last_bucket: str | None = None  # once ``limit`` are found: only ties with it remain
        while True:
            response = self._call("query", **params, Limit=BATCH_GET_KEYS)
            candidates = response.get("Items", [])
            if last_bucket is not None:
                candidates = [c for c in candidates if c["gsi1sk"]["S"] == last_bucket]
            runs = [codec.run_from_item(item) for item in self._batch_get(list(map(_table_key, candidates)))]
            due += [run for run in runs if run.status == "running" and run.next_at < due_before]
            start = response.get("LastEvaluatedKey")
            if not start or (last_bucket is not None and len(candidates) < len(response.get("Items", []))):
                return due
            if last_bucket is None and len(due) >= limit and candidates:
                last_bucket = candidates[-1]["gsi1sk"]["S"]
            params = {**params, "ExclusiveStartKey": start}

    # -- primitives ---------------------------------------------------------------------
    def _put_new(self, item: codec.Item) -> None:
        """Put an item that must not exist yet (ConflictError if it does)."""
        self._call(
            "put_item",
            TableName=self.table_name,
            Item=item,
            ConditionExpression="attribute_not_exists(pk)",
        )

    def _get(self, key: codec.Item) -> codec.Item | None:
        response = self._call("get_item", TableName=self.table_name, Key=key, ConsistentRead=True)
        return response.get("Item")

    def _query(self, params: dict[str, Any], limit: int) -> list[codec.Item]:
        """Up to ``limit`` items of a query, following its pages."""
        items: list[codec.Item] = []
        while len(items) < limit:
            response = self._call("query", **params, Limit=limit - len(items))
            items += response.get("Items", [])
            start = response.get("LastEvaluatedKey")
            if not start:
                break
            params = {**params, "ExclusiveStartKey": start}
        return items

    def _batch_get(self, keys: list[codec.Item]) -> list[codec.Item]:
        """The items at ``keys``, in the order of ``keys`` (missing ones skipped)."""
        found: dict[tuple[str, str], codec.Item] = {}
        for chunk in _chunks(keys, BATCH_GET_KEYS):
            request: dict[str, Any] = {self.table_name: {"Keys": chunk, "ConsistentRead": True}}
            for attempt in range(8):
                response = self._call("batch_get_item", RequestItems=request)
                for item in response.get("Responses", {}).get(self.table_name, []):
                    found[_key_tuple(item)] = item
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(min(0.05 * 2**attempt, 1.0))  # throttled: back off, then retry the rest
            if request:
                raise StoreUnavailableError("batch_get_item: keys left unprocessed after retries")
        return [found[k] for k in map(_key_tuple, keys) if k in found]


# -- helpers ------------------------------------------------------------------------------
def _commit_update(commit: StepCommit, whole_state: dict[str, str] | None) -> dict[str, Any]:
    """UpdateExpression and its placeholders for run@k → run@k+1."""
    names = {
        "#status": "status",
        "#step": "step",
        "#error": "error",
        "#cursor": "cursor",
    }
    values: dict[str, Any] = {
        ":running": codec.S("running"),
        ":k": codec.N(commit.expected_step),
        ":next": codec.N(commit.expected_step + 1),
        ":status": codec.S(commit.status),
        ":error": codec.json_or_null(commit.error),
        ":updated": codec.S(commit.updated_at),
        ":finished": codec.str_or_null(commit.finished_at),
        ":next_at": codec.N(commit.next_at),
    }
    sets = [
        "#status = :status",
        "#step = :next",
        "#error = :error",
        "updated_at = :updated",
        "finished_at = :finished",
        "next_at = :next_at",
    ]
    removes = []
    if commit.cursor is not None:
        sets.append("#cursor = :cursor")
        values[":cursor"] = codec.cursor_value(commit.cursor)
    else:
        removes.append("#cursor")
    if commit.status == "running":
        # Usually the value it already has (same bucket): then no index write is billed.
        sets.append("gsi1sk = :due")
        values[":due"] = codec.S(codec.due_bucket_key(commit.next_at))
    else:  # leaves the sweeper's index
        removes += ["gsi1pk", "gsi1sk"]
    if whole_state is not None or commit.update:
        names["#state"] = "state"
    if whole_state is not None:
        sets.append("#state = :state")
        values[":state"] = codec.state_value(whole_state)
    else:
        for i, (key, text) in enumerate(commit.update.items()):
            names[f"#k{i}"] = key
            values[f":v{i}"] = codec.S(text)
            sets.append(f"#state.#k{i} = :v{i}")
    expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
    return {
        "UpdateExpression": expression,
        "ConditionExpression": "#status = :running AND #step = :k",
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }


def _keyed_chars(update: dict[str, str]) -> int:
    """Length of the ``SET #state.#kI = :vI`` clauses for ``update``."""
    return sum(len(f", #state.#k{i} = :v{i}") for i in range(len(update)))


def _table_key(item: codec.Item) -> codec.Item:
    return {"pk": item["pk"], "sk": item["sk"]}


def _key_tuple(item: codec.Item) -> tuple[str, str]:
    return item["pk"]["S"], item["sk"]["S"]


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _encode_token(index_sk: str) -> str:
    return base64.urlsafe_b64encode(index_sk.encode()).decode().rstrip("=")


def _graph_index_start(token: str) -> codec.Item | None:
    """The ExclusiveStartKey a list token stands for, or None if it is not one of ours."""
    try:
        index_sk = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    _, sep, graph_id = index_sk.partition("#")
    if not sep or not graph_id:
        return None
    return {
        **codec.graph_key(graph_id),
        "gsi1pk": codec.S(codec.GRAPHS_GSI_PK),
        "gsi1sk": codec.S(index_sk),
    }
