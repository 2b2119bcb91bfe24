"""perf/stage_times.py sums Snakemake's benchmark files per rule."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("stage_times", REPO / "perf" / "stage_times.py")
stage_times = importlib.util.module_from_spec(spec)
spec.loader.exec_module(stage_times)

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def benchmark_file(path: Path, seconds: float, rss: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{seconds}\t0:00:01\t{rss}\t1\t1\t1\t0\t0\t90\t{seconds}\n")


def test_jobs_are_summed_per_rule(tmp_path):
    benchmark_file(tmp_path / "evaluate" / "bench" / "model" / "vanilla.tsv", 20.0, "800.5")
    benchmark_file(tmp_path / "evaluate" / "bench" / "model" / "ga.tsv", 10.0, "700")
    benchmark_file(tmp_path / "build_base" / "bench" / "model.tsv", 300.0, "-")
    rows = stage_times.table(stage_times.read_jobs(tmp_path))
    assert rows[0][:5] == ["build_base", "1", "300", "300.0", "300.0-300.0"]
    assert rows[1] == ["evaluate", "2", "30", "15.0", "10.0-20.0", "800"]
    assert rows[-1][:3] == ["all", "3", "330"]
