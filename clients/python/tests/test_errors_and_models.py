"""Typed errors and the model registry against a real cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import QUICK_JOB, Trained

import camshaft


def test_missing_things_are_not_found(client: camshaft.Client, image_files: list[Path]) -> None:
    with pytest.raises(camshaft.NotFound) as info:
        client.models.get("no-such-model")
    assert info.value.code.name == "NOT_FOUND" and info.value.method == "GetModel"
    assert isinstance(info.value, LookupError)
    with pytest.raises(camshaft.NotFound):
        client.get_job("j-999999")
    with pytest.raises(camshaft.NotFound):
        client.explain("no-such-model@prod", image_files[:1])


def test_a_bad_spec_is_invalid_argument(client: camshaft.Client) -> None:
    with pytest.raises(camshaft.InvalidArgument) as info:
        client.submit_job(**dict(QUICK_JOB, epochs=0))  # type: ignore[arg-type]
    assert "epochs" in info.value.message
    assert isinstance(info.value, ValueError)
    with pytest.raises(camshaft.InvalidArgument) as bad_lr:
        client.submit_job(**dict(QUICK_JOB, lr=-1.0))  # type: ignore[arg-type]
    assert "lr" in bad_lr.value.message


@pytest.mark.server_change
def test_a_bad_spec_names_its_field(client: camshaft.Client) -> None:
    with pytest.raises(camshaft.InvalidArgument) as info:
        client.submit_job(**dict(QUICK_JOB, epochs=0))  # type: ignore[arg-type]
    # Depends on the coordinator sending google.rpc.BadRequest in grpc-status-details-bin.
    assert [v.field for v in info.value.field_violations] == ["spec.epochs"]
    assert "epochs" in info.value.field_violations[0].description


def test_client_side_mistakes_are_invalid_argument(client: camshaft.Client) -> None:
    with pytest.raises(camshaft.InvalidArgument, match="unknown head 'mlp'; expected one of: linear, fastai, cam"):
        client.submit_job(dataset="synthetic", head="mlp")
    with pytest.raises(camshaft.InvalidArgument, match="unknown key 'epohcs'"):
        client.submit_job({"dataset": "synthetic", "epohcs": 3})
    with pytest.raises(camshaft.InvalidArgument, match="train_len applies to dataset synthetic only"):
        client.submit_job(dataset="pets", train_len=10)


def test_cancelling_a_finished_job_is_failed_precondition(trained: Trained, client: camshaft.Client) -> None:
    with pytest.raises(camshaft.FailedPrecondition):
        client.jobs.cancel(trained.job.id)


def test_aliases_move_and_go(trained: Trained, client: camshaft.Client) -> None:
    version = client.models.get(trained.model)
    assert version.ref == trained.model and "latest" in version.aliases
    assert version.spec.arch == "resnet18" and version.spec.head == "cam" and version.spec.input_size == 64
    assert version.lineage.job_id == trained.job.id
    moved = client.models.set_alias(version.name, "prod", version.version)
    assert moved.version == version.version and "prod" in moved.aliases
    assert client.models.get(f"{version.name}@prod").version == version.version
    assert version.ref in [v.ref for v in client.models.list(version.name)]
    # An aliased version is not deleted without force.
    with pytest.raises(camshaft.FailedPrecondition):
        client.models.delete(version.name, version.version)
    assert client.models.delete_alias(version.name, "prod") == version.version
    with pytest.raises(camshaft.NotFound):
        client.models.get(f"{version.name}@prod")
    with pytest.raises(camshaft.NotFound):
        client.models.set_alias(version.name, "prod", 999)


def test_a_token_the_server_does_not_need_is_ignored(cluster, client: camshaft.Client) -> None:  # type: ignore[no-untyped-def]
    # The default cluster has no client tokens: every caller is `anonymous`.
    with cluster.client(token="0123456789abcdef0123") as with_token:
        assert with_token.workers.list()
    with pytest.raises(camshaft.InvalidArgument, match="empty"):
        cluster.client(token="  ")
