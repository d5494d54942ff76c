"""Items labeled before their project had a model (cold start) go to review unscored. The labeler remembers
them until they are reviewed; when a model version is installed, it scores those still waiting, so the router
can auto-accept the confident ones (which closes their review tasks) and the cold start costs only the reviews
the first model needs, not one per item that arrived before it.

The local provider only: remote providers score every item they are given."""

from __future__ import annotations

from labelgate_core.events import ItemSubmitted, LabelScored
from labelgate_core.store.port import Transaction
from labelgate_core.topics import encode, headers_for

from .provider import LabelProvider, LabelRequest

UNSCORED = "unscored"
"""One document per item proposed without a confidence and not reviewed yet (``_id`` project:item)."""


def _key(project_id: str, item_id: str) -> str:
    return f"{project_id}:{item_id}"


async def remember(tx: Transaction, item: ItemSubmitted) -> None:
    await tx.update_one(
        UNSCORED,
        {"_id": _key(item.project_id, item.item_id)},
        set={"project_id": item.project_id, "item_id": item.item_id, "item": item.model_dump(mode="json")},
        upsert=True,
    )


async def forget(tx: Transaction, project_id: str, item_id: str) -> None:
    """The item was reviewed: a human label beats any later score."""
    await tx.delete_many(UNSCORED, {"_id": _key(project_id, item_id)})


async def score_waiting(tx: Transaction, provider: LabelProvider, project_id: str, producer: str, limit: int) -> int:
    """Score up to ``limit`` of the project's unscored items with ``provider`` and publish the new proposals
    (``label.scored``, caused by the item's submission); items it still cannot score keep waiting."""
    scored = 0
    for doc in await tx.find(UNSCORED, {"project_id": project_id}, sort=[("_id", 1)], limit=limit):
        item = ItemSubmitted.model_validate(doc["item"])
        proposal = await provider.propose(
            LabelRequest(
                project_id=item.project_id,
                item_id=item.item_id,
                text=item.text,
                task=item.task,
                guideline_version=item.guideline_version,
                image=item.image,
            )
        )
        if proposal.confidence is None:
            continue
        event = LabelScored(
            **item.caused(),
            producer=producer,
            proposal=proposal,
            task=item.task,
            routing=item.routing,
            guideline_version=item.guideline_version,
            submitted_at=item.occurred_at,
            gold=item.gold,
        )
        await tx.add_outbox(event.topic, event.key, encode(event), headers_for(event))
        await tx.delete_many(UNSCORED, {"_id": doc["_id"]})
        scored += 1
    return scored
