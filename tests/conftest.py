"""Shared fixtures: a small synthetic benchmark and untrained tiny models of both families.

Nothing here touches the network: the hub is switched off for the whole session, and every
dataset and model is built on the spot.
"""

from __future__ import annotations

import os
import shutil
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Nothing lands in the user's ~/.cache, and no test sees another's cached copy of a file it rewrote.
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="hf-home-")
# Under pytest-xdist (`make test` runs one worker per core) each worker, and every stage or
# workflow it starts, computes on one thread: the tiny models gain little from a second one, and
# two workers each asking for every core made the suite slower than one worker.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"

from pathlib import Path

import pytest

from helpers import SMALL, call_stage, snakemake, workspace


@pytest.fixture(scope="session")
def raw_benchmark(tmp_path_factory) -> Path:
    """A small synthetic MLLMU-Bench directory (40 fictitious, 8 real and 6 holdout profiles)."""
    out = tmp_path_factory.mktemp("synthetic") / "raw"
    call_stage("synthesize_benchmark", "--out", out, "--seed", "3", "--fictitious-profiles", "40",
               "--real-profiles", "8", "--holdout-profiles", "6", "--image-size", "32", "--test-images", "2")
    return out


@pytest.fixture(scope="session")
def benchmark(raw_benchmark, tmp_path_factory) -> Path:
    """``raw_benchmark`` read into canonical records."""
    out = tmp_path_factory.mktemp("prepared") / "benchmark"
    call_stage("prepare_benchmark", "--format", "mllmu_bench", "--path", raw_benchmark, "--out", out)
    return out


@pytest.fixture(scope="session")
def tiny_models(benchmark, tmp_path_factory) -> dict[str, Path]:
    """Untrained tiny LLaVA and Qwen2-VL saved as on the hub, keyed by family."""
    from pipeline_steps.benchmarks.records import read_split
    from pipeline_steps.build_base import tokenizer_corpus
    from pipeline_steps.models.loading import save_model
    from pipeline_steps.models.tiny import TinyArchitecture, build_tiny

    corpus = tokenizer_corpus(read_split(benchmark, "full") + read_split(benchmark, "real_world"))
    arch = TinyArchitecture(vision_hidden=32, vision_layers=2, text_hidden=64, text_layers=2, vocab_size=600)
    paths = {}
    for family in ("llava", "qwen2_vl"):
        model, processor = build_tiny(family, corpus, arch, seed=0)
        paths[family] = tmp_path_factory.mktemp(family)
        save_model(model, processor, paths[family])
    return paths


@pytest.fixture(params=["llava", "qwen2_vl"])
def loaded(request, tiny_models):
    """(family, a freshly loaded tiny model of it), once per family."""
    from pipeline_steps.models.loading import load_model

    return request.param, load_model(str(tiny_models[request.param]))


@pytest.fixture(scope="session")
def small_study(tmp_path_factory, worker_id) -> Path:
    """A workspace where ``config/small.yaml`` has run to completion: run once per session by the
    first test that asks (pytest-xdist's workers share it through a lock). The SLURM test compares
    its cluster run with it; the end-to-end test checks it, then edits it (its last user)."""
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp()
    shared = shared if worker_id == "master" else shared.parent
    root, complete = shared / "small_study", shared / "small_study.complete"
    with FileLock(shared / "small_study.lock"):
        if not complete.exists():
            shutil.rmtree(root, ignore_errors=True)
            workspace(root, SMALL)
            result = snakemake(root, "--cores", "2")
            assert result.returncode == 0, result.stderr[-3000:]
            complete.touch()
    return root


def pytest_collection_modifyitems(items):
    """Slow tests first: with the longest jobs started early, the workers finish together. The
    real-SLURM test first of all, as it mostly waits for the scheduler while the small study it
    compares with runs beside it."""
    items.sort(key=lambda item: (item.originalname != "test_small_config_through_slurm_matches_local_run",
                                 item.get_closest_marker("slow") is None))
