"""The client keeps up with the review API: every endpoint has a client method, every field the API returns has a
place in the client's models, and every field a request body takes can be given through the client."""

from __future__ import annotations

import inspect

from pydantic import BaseModel

import labelgate_client as client_models
from labelgate_client import LabelgateClient
from labelgate_review_api import schemas
from labelgate_review_api.main import build_api
from labelgate_review_api.service import ReviewApiService

P = "/v1/projects/{project_id}"
ENDPOINTS = {
    ("POST", "/v1/projects"): "create_project",
    ("GET", "/v1/projects"): "list_projects",
    ("GET", P): "get_project",
    ("PATCH", P): "update_project",
    ("PUT", f"{P}/guidelines"): "update_guidelines",
    ("PATCH", f"{P}/routing"): "update_routing",
    ("GET", f"{P}/stats"): "stats",
    ("GET", f"{P}/reviewers"): "reviewers",
    ("GET", f"{P}/agreement"): "agreement",
    ("POST", f"{P}/items"): "submit_items",
    ("GET", f"{P}/items"): "list_items",
    ("GET", f"{P}/items/{{item_id}}"): "get_item",
    ("GET", f"{P}/items/{{item_id}}/image"): "image",
    ("GET", f"{P}/export.jsonl"): "export",
    ("GET", f"{P}/export"): "export_bytes",
    ("POST", f"{P}/queue/lease"): "lease",
    ("POST", f"{P}/tasks/{{task_id}}/heartbeat"): "heartbeat",
    ("POST", f"{P}/tasks/{{task_id}}/release"): "release",
    ("POST", f"{P}/tasks/{{task_id}}/review"): "review",
    ("GET", "/healthz"): "healthz",
    ("GET", "/readyz"): "readyz",
}
NOT_FOR_THE_CLIENT = {("GET", "/metrics")}  # Prometheus scrapes it

# What the API answers with, and the client model that reads it.
ANSWERS: dict[type[BaseModel], type[BaseModel]] = {
    schemas.ProjectPublic: client_models.Project,
    schemas.GuidelinesResult: client_models.GuidelinesResult,
    schemas.TaskSpecPublic: client_models.TaskSpec,
    schemas.LabelPublic: client_models.LabelDef,
    schemas.RoutingPublic: client_models.Routing,
    schemas.SubmitResult: client_models.SubmitResult,
    schemas.SubmittedItem: client_models.SubmittedItem,
    schemas.ItemPublic: client_models.Item,
    schemas.ItemPage: client_models.ItemPage,
    schemas.ImagePublic: client_models.Image,
    schemas.SpanPublic: client_models.Span,
    schemas.BoxPublic: client_models.Box,
    schemas.ProposalPublic: client_models.Proposal,
    schemas.DecisionPublic: client_models.Decision,
    schemas.ReviewPublic: client_models.ReviewRecord,
    schemas.FinalPublic: client_models.Final,
    schemas.ConsensusPublic: client_models.Consensus,
    schemas.ProjectStats: client_models.Stats,
    schemas.FinalBySource: client_models.FinalBySource,
    schemas.LeasedTask: client_models.Task,
    schemas.LeasePublic: client_models.Lease,
    schemas.ReviewResult: client_models.Review,
    schemas.ReviewerPublic: client_models.Reviewer,
    schemas.AgreementPublic: client_models.Agreement,
    schemas.LabelAgreementPublic: client_models.LabelAgreement,
    schemas.VersionAgreementPublic: client_models.VersionAgreement,
    schemas.AiAgreementPublic: client_models.AiAgreement,
    schemas.ReviewerAiAgreementPublic: client_models.ReviewerAiAgreement,
    schemas.ExportLine: client_models.FinalLabel,
}
# Request bodies the client builds from one of its models.
BODY_MODELS: dict[type[BaseModel], type[BaseModel]] = {
    schemas.ItemCreate: client_models.ItemIn,
    schemas.ImageCreate: client_models.ImageIn,
    schemas.GoldCreate: client_models.Gold,
    schemas.LabelCreate: client_models.LabelDef,
}
# Request bodies the client builds from a method's parameters, and fields given another way there.
BODY_PARAMETERS: dict[type[BaseModel], tuple[str, set[str]]] = {
    schemas.ProjectCreate: ("create_project", {"id", "task", "routing"}),
    schemas.TaskSpecCreate: ("create_project", {"type"}),
    schemas.RoutingCreate: ("create_project", set()),
    schemas.ProjectUpdate: ("update_project", set()),
    schemas.GuidelinesUpdate: ("update_guidelines", set()),
    schemas.RoutingUpdate: ("update_routing", set()),
    schemas.LeaseCreate: ("lease", set()),
    schemas.HeartbeatCreate: ("heartbeat", set()),
    schemas.ReleaseCreate: ("release", set()),
    schemas.ReviewCreate: ("review", set()),
}


def test_every_endpoint_has_a_client_method(service: ReviewApiService) -> None:
    paths = build_api(service).openapi()["paths"]
    routes = {(method.upper(), path) for path, operations in paths.items() for method in operations}

    assert routes - NOT_FOR_THE_CLIENT == set(ENDPOINTS), "an endpoint was added or removed: cover it in the client"
    for name in ENDPOINTS.values():
        assert inspect.iscoroutinefunction(getattr(LabelgateClient, name)) or inspect.isasyncgenfunction(
            getattr(LabelgateClient, name)
        ), name


def test_every_field_the_api_returns_has_a_place_in_the_client_models() -> None:
    public = {c for c in vars(schemas).values() if isinstance(c, type) and issubclass(c, schemas.Public)}
    public -= {schemas.Public, schemas.ErrorBody, schemas.ErrorDetail}  # LabelgateAPIError reads these

    assert public == set(ANSWERS), "an answer model was added or removed: give it a client model"
    for server, client in ANSWERS.items():
        missing = set(server.model_fields) - set(client.model_fields)
        assert not missing, f"{client.__name__} lacks {sorted(missing)} of {server.__name__}"


def test_every_request_field_can_be_given_through_the_client() -> None:
    inputs = {c for c in vars(schemas).values() if isinstance(c, type) and issubclass(c, schemas.Input)}
    inputs -= {schemas.Input, schemas.ItemsSubmit, schemas.SpanCreate, schemas.BoxCreate}  # see below

    assert inputs == set(BODY_MODELS) | set(BODY_PARAMETERS), "a request body was added: let the client send it"
    for server, client in BODY_MODELS.items():
        missing = set(server.model_fields) - set(client.model_fields)
        assert not missing, f"{client.__name__} lacks {sorted(missing)} of {server.__name__}"
    for server, (method, elsewhere) in BODY_PARAMETERS.items():
        parameters = set(inspect.signature(getattr(LabelgateClient, method)).parameters)
        missing = set(server.model_fields) - parameters - elsewhere
        assert not missing, f"LabelgateClient.{method} lacks {sorted(missing)} of {server.__name__}"
    # Items go as a list of ItemIn; spans and boxes as the client's Span and Box (or mappings).
    assert set(schemas.ItemsSubmit.model_fields) == {"items"}
    assert set(schemas.SpanCreate.model_fields) <= set(client_models.Span.model_fields)
    assert set(schemas.BoxCreate.model_fields) <= set(client_models.Box.model_fields)
