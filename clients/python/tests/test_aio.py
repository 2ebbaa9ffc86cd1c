"""The asyncio client against a real cluster."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from conftest import QUICK_JOB, Cluster, Trained

import camshaft
import camshaft.aio


def test_the_asyncio_client_submits_gets_watches_and_explains(
    trained: Trained, cluster: Cluster, client: camshaft.Client, image_files: list[Path]
) -> None:
    async def main() -> None:
        async with camshaft.aio.Client(cluster.coordinator, cluster.explainer, timeout=120) as cs:
            # submit, get, cancel
            job = await cs.submit_job(**dict(QUICK_JOB, name="aio"))  # type: ignore[arg-type]
            assert job.id and job.state in ("pending", "running")
            again = await cs.get_job(job.id)
            assert again.id == job.id and again.spec["name"] == "aio"
            await job.cancel("aio test")
            assert job.state == "cancelled"
            with pytest.raises(camshaft.JobFailed):
                await job.wait(timeout=60)
            # watch (a replay of the finished job): the sync client's rows
            finished = await cs.get_job(trained.job.id)
            rows = [row async for row in finished.watch()]
            assert rows == trained.live_rows
            assert finished.history == trained.job.history
            # explain: the sync client's results
            out = await cs.explain(trained.model, image_files, top_k=2, overlay=True)
            sync = client.explain(trained.model, image_files, top_k=2, overlay=True)
            assert [r.id for r in out] == [r.id for r in sync]
            for a, b in zip(out, sync):
                assert a.overlay_png == b.overlay_png
                for ma, mb in zip(a.maps, b.maps):
                    np.testing.assert_array_equal(ma, mb)
            # models and errors
            version = await cs.models.get(trained.model)
            assert version.ref == trained.model
            with pytest.raises(camshaft.NotFound):
                await cs.models.get("no-such-model")
            assert [w.worker_id for w in await cs.workers.list()] == [w.worker_id for w in client.workers.list()]
            info = await cs.server_info("explainer")
            assert "explainer" in info.roles

    asyncio.run(main())
