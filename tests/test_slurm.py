"""The SLURM workflow profile (profiles/slurm) on a real one-node SLURM cluster.

The test starts the cluster with tests/slurm/start_cluster.sh (as root; it installs slurm-wlm and
munge with apt-get if needed) and is skipped, with the script's message, where that cannot
work. It runs config/small.yaml's path to every GPU stage (two methods, one of them masked)
through ``--workflow-profile profiles/slurm``, checks that every job went through ``sbatch``
(asking for no GPU: the config's device is ``cpu``) with the profile's per-rule resources, and
that it scores every variant as the session's local run of the same config does (the
``small_study`` fixture; on CPU, with one thread per job, the stages are deterministic).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import REPO, SMALL, planned_jobs, snakemake, workspace


START_CLUSTER = REPO / "tests" / "slurm" / "start_cluster.sh"
PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
GPU_RULES = ("build_base", "finetune_vanilla", "finetune_reference", "compute_fisher", "unlearn", "evaluate")
VARIANTS = ("base", "vanilla", "ga", "mmunlearner/beta~1.0/modules~all")
TARGETS = [f"results/mini/mini_llava/forget~10/eval/{variant}/metrics.json" for variant in VARIANTS]
# The test cluster has no accounting database (no sacct) and keeps finished jobs for squeue;
# the first status check comes after 2 s instead of 40 s.
TEST_CLUSTER_FLAGS = ("--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
                      "--slurm-no-account", "--slurm-keep-successful-logs")


def megabytes(size: str) -> int:
    """``24105M`` or ``32G`` (scontrol's memory sizes) in MB."""
    number, unit = re.fullmatch(r"(\d+)([MGT])", size).groups()
    return int(number) * {"M": 1, "G": 1024, "T": 1024 ** 2}[unit]


@pytest.fixture(scope="module")
def slurm_cluster() -> dict:
    """Start (or find) the test cluster; its node's memory in MB."""
    try:
        result = subprocess.run(["bash", str(START_CLUSTER)], capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        pytest.skip(f"{START_CLUSTER.name} did not finish within 15 minutes")
    if result.returncode != 0:
        message = (result.stderr.strip() or result.stdout.strip()).splitlines()
        pytest.skip(f"no SLURM test cluster: {message[-1] if message else f'exit status {result.returncode}'}")
    memory = subprocess.run(["sinfo", "--noheader", "--format", "%m"], capture_output=True, text=True, check=True)
    return {"memory_mb": min(int(re.sub(r"\D", "", line)) for line in memory.stdout.split() if line.strip())}


def test_profile_requests_gpus_through_the_plugin_only():
    """The rules' own gpu counts (0 for device: cpu) reach the plugin; nothing asks for GPUs past it."""
    profile = yaml.safe_load(PROFILE.read_text())
    assert profile["executor"] == "slurm"
    assert set(GPU_RULES) <= set(profile["set-resources"])
    for rule, resources in [("default", profile["default-resources"]), *profile["set-resources"].items()]:
        assert {"mem_mb", "runtime"} <= set(resources), rule
        assert "gpu" not in resources, f"{rule}: a gpu count here would override the rule's device-dependent one"
        assert not re.search(r"--(gpus|gres)\b", str(resources.get("slurm_extra", ""))), rule
        assert "gres" not in resources and "gpu_model" not in resources, (
            f"{rule}: gres/gpu_model would ask for GPUs even for a device: cpu config")


@pytest.mark.slow
def test_small_config_through_slurm_matches_local_run(tmp_path, slurm_cluster, request):
    cluster = workspace(tmp_path / "slurm", SMALL)
    profile = yaml.safe_load(PROFILE.read_text())
    # The profile sizes jobs for 7B models; the one test node has less memory than some
    # requests, so those are capped at what it has (memory is not enforced there). Every other
    # setting is the profile's own.
    for resources in [profile["default-resources"], *profile["set-resources"].values()]:
        resources["mem_mb"] = min(resources["mem_mb"], slurm_cluster["memory_mb"])
    (cluster / "profiles" / "slurm").mkdir(parents=True)
    (cluster / "profiles" / "slurm" / "config.yaml").write_text(yaml.safe_dump(profile))

    args = ("--workflow-profile", "profiles/slurm", *TEST_CLUSTER_FLAGS, *TARGETS)
    planned = planned_jobs(snakemake(cluster, "-n", *args, cluster=True))
    assert set(planned) >= set(GPU_RULES) - {"finetune_reference"}, planned

    # The SLURM run spends much of its time waiting for the scheduler and for status checks,
    # so the local run goes meanwhile if no test has asked for it yet (every job uses one thread:
    # results do not depend on load).
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    stderr = tmp_path / "slurm.stderr"
    with open(stderr, "w") as handle:
        slurm_run = subprocess.Popen([sys.executable, "-m", "snakemake", *args], stdout=subprocess.DEVNULL,
                                     stderr=handle, env=env, cwd=cluster)
        try:
            local = request.getfixturevalue("small_study")
            slurm_run.wait(timeout=1800)
        finally:
            if slurm_run.poll() is None:
                slurm_run.terminate()
                slurm_run.wait()
    log = stderr.read_text()
    assert slurm_run.returncode == 0, log[-5000:]

    # Every job went through sbatch, under this run's job name, and finished in SLURM.
    run_id = re.search(r"SLURM run ID: (\S+)", log).group(1)
    slurm_ids = re.findall(r"has been submitted with SLURM jobid (\d+)", log)
    assert len(slurm_ids) == sum(planned.values()), (planned, slurm_ids)
    jobs = {}
    for slurm_id in slurm_ids:
        shown = subprocess.run(["scontrol", "--oneliner", "show", "job", slurm_id], capture_output=True,
                               text=True, check=True).stdout
        fields = dict(re.findall(r"(\w+)=(\S*)", shown))
        assert fields["JobName"] == run_id and fields["JobState"] == "COMPLETED", shown
        # The GPU rules declare gpu=0 for device: cpu, and the plugin then asks for no GPU.
        requests = {key: value for key, value in fields.items() if re.search("tres|gres", key, re.IGNORECASE)}
        assert not any("gpu" in value for value in requests.values()), shown
        rule = next(r for r in sorted(planned, key=len, reverse=True)
                    if re.fullmatch(rf"rule_{r}(_wildcards_.*)?", fields["Comment"]))
        jobs.setdefault(rule, []).append(fields)
    assert {rule: len(found) for rule, found in jobs.items()} == planned

    # The profile's per-rule runtime and memory reached sbatch.
    for rule, found in jobs.items():
        resources = {**profile["default-resources"], **profile["set-resources"].get(rule, {})}
        days, minutes = divmod(resources["runtime"], 24 * 60)
        limit = f"{days}-" * bool(days) + f"{minutes // 60:02d}:{minutes % 60:02d}:00"
        for fields in found:
            assert fields["TimeLimit"] == limit, fields
            assert megabytes(fields["MinMemoryNode"]) == resources["mem_mb"], fields

    # Both runs score every variant the same.
    for target in TARGETS:
        on_cluster = json.loads((cluster / target).read_text())
        on_machine = json.loads((local / target).read_text())
        assert on_cluster["table"] == on_machine["table"], target
