"""The runs each principal holds (engine/running.py), on :class:`~functions.aws.dynamodb.DynamoRunStore`.

| kind    | pk             | sk      | attributes                          |
|---------|----------------|---------|-------------------------------------|
| running | OWNER#<arn>    | RUNNING | ``runs``: map run id -> epoch, n    |

One item per principal. Counting a run is one conditional UpdateItem: the map gains the
run only while it has fewer than the cap's entries (or already has this run), so two
starts racing for the last place cannot both take it. The item is made by the first
run a principal starts. Giving places back is one UpdateItem that removes entries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.errors import ConflictError
from functions.aws import dynamodb_codec as codec
from functions.aws.dynamodb_fanout import old_item

#: Entries removed by one UpdateItem (an update expression stays well under its limits).
RELEASE_BATCH = 100


def running_key(owner: str) -> codec.Item:
    return {"pk": codec.S(f"OWNER#{owner}"), "sk": codec.S("RUNNING")}


class DynamoRunningRuns:
    """The running-runs half of the RunStore contract (mixed into DynamoRunStore)."""

    table_name: str

    if TYPE_CHECKING:  # provided by DynamoRunStore

        def _call(self, operation: str, **params: Any) -> Any: ...
        def _get(self, key: codec.Item) -> codec.Item | None: ...

    def hold_run(self, owner: str, run_id: str, cap: int, now: float) -> bool:
        for _ in range(2):  # a second time when a racing first run made the item
            try:
                self._call(
                    "update_item",
                    TableName=self.table_name,
                    Key=running_key(owner),
                    UpdateExpression="SET runs.#run = if_not_exists(runs.#run, :now)",
                    ConditionExpression="attribute_exists(runs) AND (size(runs) < :cap OR attribute_exists(runs.#run))",
                    ExpressionAttributeNames={"#run": run_id},
                    ExpressionAttributeValues={":now": codec.N(now), ":cap": codec.N(cap)},
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
                return True
            except ConflictError as exc:
                if old_item(exc) is not None:
                    return False  # at the cap
            try:  # the principal's first run: make the item with it
                self._call(
                    "put_item",
                    TableName=self.table_name,
                    Item={
                        **running_key(owner),
                        "kind": codec.S("running"),
                        "runs": {"M": {run_id: codec.N(now)}},
                    },
                    ConditionExpression="attribute_not_exists(pk)",
                )
                return True
            except ConflictError:
                continue
        return False

    def held_runs(self, owner: str) -> dict[str, float]:
        item = self._get(running_key(owner))
        runs = (item or {}).get("runs", {}).get("M", {})
        return {run_id: float(value["N"]) for run_id, value in runs.items()}

    def release_runs(self, owner: str, run_ids: list[str]) -> None:
        for start in range(0, len(run_ids), RELEASE_BATCH):
            batch = run_ids[start : start + RELEASE_BATCH]
            names = {f"#r{i}": run_id for i, run_id in enumerate(batch)}
            try:
                self._call(
                    "update_item",
                    TableName=self.table_name,
                    Key=running_key(owner),
                    UpdateExpression="REMOVE " + ", ".join(f"runs.{name}" for name in names),
                    ConditionExpression="attribute_exists(runs)",
                    ExpressionAttributeNames=names,
                )
            except ConflictError:
                return  # no item: nothing is held
