"""Plumbing against a real OpenAI-compatible model server (llama-cpp-python serving Gemma 3 270M): the
request shapes are accepted, the answer is validated, confidence and tokens are reported and priced, and the
few-shot examples reach the prompt. Label quality is not asserted: a 270M model is not expected to be good.

The first run builds llama-cpp-python from source into ``~/.cache/labelgate`` (8-15 minutes on 2 cores; its log
is ``~/.cache/labelgate/build/build.log``); later runs reuse the wheel, the environment and the model file."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from labelgate_labeler.llm.config import ConfidenceMethod, LLMProviderConfig, Price
from labelgate_labeler.llm.openai_client import OpenAIChatClient
from labelgate_labeler.llm.prompt import Example, Guidelines
from labelgate_labeler.llm.provider import LLMProvider

from . import llama_server
from .helpers import TASK, FixedContext, request

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    # The first test's set-up may build llama-cpp-python from source (8-25 minutes on a busy 2-core machine).
    pytest.mark.timeout(3600),
]


@pytest.fixture(scope="module")
def llama_url() -> Iterator[str]:
    llama_server.build_wheel()
    llama_server.prepare()
    with llama_server.serving() as base:
        yield base


def real(base_url: str, **fields: object) -> LLMProvider:
    config = LLMProviderConfig.model_validate(
        {"name": "llama", "base_url": base_url, "model": "gemma-3-270m", "timeout_s": 120, "max_attempts": 2,
         "price": Price(input=1.0, output=2.0), "few_shot": 2} | fields
    )
    context = FixedContext(Guidelines(3, "Refunds and invoices are billing."),
                           [Example("Where is my parcel?", ("shipping",), corrected=True),
                            Example("Send me a copy of my invoice", ("billing",))])
    return LLMProvider(config, OpenAIChatClient(config), context=context)


async def test_a_real_server_answers_in_the_schema_with_logprob_confidence_tokens_and_cost(llama_url: str) -> None:
    llm = real(llama_url)
    proposal = await llm.propose(request("I was charged twice, please refund me"))
    await llm.close()
    # Whatever label the model chose, the answer was validated against the schema and scored.
    if proposal.invalid:
        pytest.fail(f"the constrained answer failed validation: {proposal.error}")
    assert proposal.labels[0] in TASK.label_names
    assert proposal.method == "logprobs"
    assert proposal.confidence is not None
    assert 0.0 < proposal.confidence <= 1.0
    assert proposal.input_tokens > 0
    assert proposal.output_tokens > 0
    assert proposal.cost_usd == pytest.approx((proposal.input_tokens * 1.0 + proposal.output_tokens * 2.0) / 1e6)
    assert proposal.guideline_version == 3


async def test_the_prompt_the_server_saw_holds_the_examples(llama_url: str) -> None:
    llm = real(llama_url, confidence=ConfidenceMethod.verbalized)
    prompt = await llm.prompt(request("I was charged twice"))
    proposal = await llm.propose(request("I was charged twice"))
    await llm.close()
    assert prompt.examples == 2
    assert any("Where is my parcel?" in m["content"] for m in prompt.messages)
    # llama-cpp-python's server takes ``json_object`` + ``schema``; the negotiation found a shape it accepts.
    assert llm.structured_output.value in {"json_schema", "json_object_schema", "json"}
    assert proposal.input_tokens > prompt.examples * 5
