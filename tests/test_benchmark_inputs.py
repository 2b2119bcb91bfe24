"""Benchmark data as researchers have it on a cluster (issue 18): copies without the dataset card,
older hub revisions, clones without git-lfs, damaged files; and an account of every source row.

Refusals are checked through the stage's command line (in-process, as ``python -m`` runs it): the
stage must exit with one line naming the file, config or column and the fix, and leave no output
directory. ``tests/BAD_INPUTS.md`` tabulates these cases with the messages they get.
"""

import io
import shutil
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
from PIL import Image

from clear_fixture import AUTHORS, FEATURES, RETAIN_PERTURBED, clear_configs, write_clear
from pipeline_steps import prepare_benchmark
from pipeline_steps.benchmarks.clear import NAME_QUESTION
from pipeline_steps.benchmarks.records import read_manifest, read_split

from helpers import edit_rows, run_stage, shard

LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize 48213\n".format("ab" * 32)


def prepare(fmt: str, out: Path, *source: str) -> str | None:
    """Run the stage as its command line does; the error line it exits with, or None on success.
    Any other exception (a traceback for the user) fails the test."""
    try:
        prepare_benchmark.run_stage(prepare_benchmark.main, prepare_benchmark.build_parser(),
                                    ["--format", fmt, *source, "--out", str(out)])
    except SystemExit as exit:
        return str(exit.code)
    return None


def prepared(fmt: str, root: Path, out: Path) -> Path:
    error = prepare(fmt, out, "--path", str(root))
    assert error is None, error
    return out


@pytest.fixture(scope="module")
def clear_raw(tmp_path_factory):
    return write_clear(tmp_path_factory.mktemp("clear") / "raw")


def raw_of(request, fmt: str) -> Path:
    return request.getfixturevalue("raw_benchmark" if fmt == "mllmu_bench" else "clear_raw")


def drop_column(config: str, column: str, index: int = 0):
    return edit_rows(config, lambda rows: [{k: v for k, v in row.items() if k != column} for row in rows], index)


def set_cell(config: str, row: int, column: str, value):
    return edit_rows(config, lambda rows: [dict(r, **{column: value}) if i == row else r for i, r in enumerate(rows)])


def without_card(root: Path) -> None:
    (root / "README.md").unlink()


def declare_rows(config: str, rows: int):
    """A card whose dataset_info gives the config another size than its files (two revisions mixed)."""
    def change(root):
        card = (root / "README.md").read_text()
        info = f"dataset_info:\n- config_name: {config}\n  splits:\n  - name: train\n    num_examples: {rows}\n"
        (root / "README.md").write_text(card.replace("\n---\n", "\n" + info + "---\n", 1))
    return change


def two_splits(config: str):
    def change(root):
        without_card(root)
        source = shard(root, config)
        shutil.copy(source, root / config / "validation-00000-of-00001.parquet")
        source.rename(root / config / "test-00000-of-00001.parquet")
    return change


def _png() -> bytes:
    """A small PNG that is no fixture's portrait."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def remove_folder(config: str):
    def change(root):
        without_card(root)
        shutil.rmtree(root / config)
    return change


# (case, format, change to a copy of the fixture, phrases the one-line error must hold)
REFUSED = [
    ("mllmu-cardless-no-Full_Set", "mllmu_bench", remove_folder("Full_Set"),
     ["local copy", "has no config 'Full_Set'", "hf download MLLMMU/MLLMU-Bench", "--include 'Full_Set/*'"]),
    ("mllmu-lfs-pointer", "mllmu_bench", lambda r: shard(r, "Test_Set", 1).write_text(LFS_POINTER),
     ["Test_Set/train-00001-of-00002.parquet is a git-lfs pointer file", "git lfs pull"]),
    ("mllmu-truncated", "mllmu_bench",
     lambda r: shard(r, "Full_Set").write_bytes(shard(r, "Full_Set").read_bytes()[:600]),
     ["Full_Set/train-00000-of-00001.parquet is truncated: no parquet footer, 600 bytes", "hf download"]),
    ("mllmu-html-page", "mllmu_bench",
     lambda r: shard(r, "forget_5").write_text("<!DOCTYPE html><html>Rate limited</html>"),
     ["forget_5/train-00000-of-00001.parquet is not a parquet file"]),
    ("mllmu-corrupt-footer", "mllmu_bench", lambda r: shard(r, "retain_85").write_bytes(b"PAR1" + bytes(64) + b"PAR1"),
     ["retain_85/train-00000-of-00001.parquet is a corrupt parquet file"]),
    ("mllmu-empty-file", "mllmu_bench", lambda r: shard(r, "Retain_Set").write_bytes(b""),
     ["Retain_Set/train-00000-of-00001.parquet is empty"]),
    ("mllmu-card-sizes", "mllmu_bench", declare_rows("Full_Set", 500),
     ["config 'Full_Set'", "declares 500 rows in split 'train' but the files hold 40",
      "Full_Set/train-00000-of-00001.parquet (40 rows)", "different revisions"]),
    ("mllmu-no-ID", "mllmu_bench", drop_column("retain_90", "ID"),
     ["config 'retain_90': no column 'ID' (it has: image, biography"]),
    ("mllmu-test-no-images", "mllmu_bench", [drop_column("Test_Set", "images", 0),
                                             drop_column("Test_Set", "images", 1)],
     ["config 'Test_Set': no column 'images' or 'image' (it has: ID, Classification_Task"]),
    ("mllmu-ft-data-unlinked", "mllmu_bench", [drop_column("ft_Data", "ID"), set_cell("ft_Data", 2, "image", {
        "bytes": _png(), "path": None})],
     ["config 'ft_Data', row 2: cannot tell whose VQA pairs these are (no 'ID' column",
      "its image is no Full_Set profile's portrait", "add an 'ID' column naming each row's Full_Set profile"]),
    ("mllmu-bad-json", "mllmu_bench", set_cell("Full_Set", 3, "biography", "{\"Name\": \"Unclosed"),
     ["config 'Full_Set', row 3: profile", "column 'biography' is not valid JSON", "hf download MLLMMU/MLLMU-Bench"]),
    ("mllmu-two-splits", "mllmu_bench", two_splits("Retain_Set"),
     ["config 'Retain_Set': splits test, validation and none is 'train'"]),
    ("mllmu-conflicting-ids", "mllmu_bench",
     edit_rows("Full_Set", lambda rows: [rows[0], dict(rows[1], ID=rows[0]["ID"]), *rows[2:]]),
     ["config 'Full_Set': two different rows have the id"]),
    ("mllmu-mixed-shards", "mllmu_bench", [without_card, drop_column("Test_Set", "Mask_Task")],
     ["config 'Test_Set': its files (Test_Set/train-00000-of-00002.parquet, Test_Set/train-00001-of-00002.parquet) "
      "could not be read together", "must share their columns and types"]),
    ("mllmu-bad-card", "mllmu_bench", lambda r: (r / "README.md").write_text("---\nconfigs: [unclosed\n---\n"),
     ["README.md has a malformed YAML header", "move it away"]),
    ("mllmu-not-an-image", "mllmu_bench", set_cell("Retain_Set", 2, "image", {"bytes": b"GIF89", "path": None}),
     ["config 'Retain_Set', row 2: an image cell holds 5 bytes that are not an image"]),
    ("clear-cardless-no-full", "clear", remove_folder("full"), ["has no config 'full'", "hf download therem/CLEAR"]),
    ("clear-early-no-name", "clear", drop_column("full", "name"),
     ["CLEAR local copy", "config 'full': no column 'name' (it has: image, caption)", "early revision",
      "download the current revision: hf download therem/CLEAR --repo-type dataset --include 'full/*'"]),
    ("clear-lfs-pointer", "clear", lambda r: shard(r, "real_faces").write_text(LFS_POINTER),
     ["real_faces/train-00000-of-00001.parquet is a git-lfs pointer file"]),
    ("clear-card-sizes", "clear", declare_rows("real_world", 367),
     ["config 'real_world'", "declares 367 rows in split 'train' but the files hold 4"]),
    ("clear-card-without-configs", "clear", lambda r: (r / "README.md").write_text(
        "---\ndataset_info:\n- config_name: full\n  splits:\n  - name: train\n    num_examples: 3768\n---\n"),
     ["config 'full'", "declares 3768 rows in split 'train' but the files hold 30", "full/train-00000-of-00001.parquet"]),
    ("clear-tofu-no-question", "clear", drop_column("forget05+tofu", "question"),
     ["config 'forget05+tofu': no column 'question'"]),
    ("clear-real-faces-no-options", "clear", drop_column("real_faces", "options"),
     ["config 'real_faces': no column 'options' (it has: image, answer)"]),
    ("clear-not-an-image", "clear", set_cell("forget10", 1, "image", {"bytes": b"\x89PNG\r\n", "path": None}),
     ["config 'forget10', row 1: an image cell holds 6 bytes that are not an image"]),
    ("cli-path-is-a-file", "clear", lambda r: None, ["--path", "is a file, not a directory"]),
    ("cli-hub-unreachable", "clear", lambda r: None,
     ["CLEAR hub dataset 'nobody/no-such-benchmark', config 'full' could not be reached", "--path"]),
    ("cli-not-a-hub-id", "mllmu_bench", lambda r: None, ["--hub 'data/MLLMU-Bench/' is not a hub dataset id"]),
]
SOURCE_ARGS = {"cli-path-is-a-file": lambda root: ["--path", str(root / "README.md")],
               "cli-hub-unreachable": lambda root: ["--hub", "nobody/no-such-benchmark"],
               "cli-not-a-hub-id": lambda root: ["--hub", "data/MLLMU-Bench/"]}


@pytest.mark.parametrize("case, fmt, change, phrases", REFUSED, ids=[case[0] for case in REFUSED])
def test_bad_input_is_refused_in_one_line_and_nothing_is_written(request, tmp_path, case, fmt, change, phrases):
    root = tmp_path / "copy"
    shutil.copytree(raw_of(request, fmt), root)
    for step in change if isinstance(change, list) else [change]:
        step(root)
    error = prepare(fmt, tmp_path / "out", *SOURCE_ARGS.get(case, lambda root: ["--path", str(root)])(root))
    assert error is not None and "\n" not in error
    for phrase in phrases:
        assert phrase in error, f"{phrase!r} not in {error!r}"
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no scratch left behind


def same_records(first: Path, second: Path) -> None:
    splits = sorted(p.name for p in (first / "splits").iterdir())
    assert splits == sorted(p.name for p in (second / "splits").iterdir()) and splits
    for name in splits:
        assert (first / "splits" / name).read_bytes() == (second / "splits" / name).read_bytes(), name
    assert sorted(p.name for p in (first / "images").iterdir()) == sorted(p.name for p in (second / "images").iterdir())
    assert read_manifest(first)["rows"] == read_manifest(second)["rows"]


@pytest.mark.parametrize("fmt", ["mllmu_bench", "clear"])
def test_a_copy_without_its_card_gives_the_same_records(request, tmp_path, fmt):
    raw = raw_of(request, fmt)
    copy = tmp_path / "copy"
    shutil.copytree(raw, copy)
    without_card(copy)
    same_records(prepared(fmt, raw, tmp_path / "with-card"), prepared(fmt, copy, tmp_path / "without-card"))


def test_parquet_files_without_datasets_metadata_give_the_same_records(raw_benchmark, tmp_path):
    """Files written by pyarrow or pandas carry no ``huggingface`` features: images are plain
    ``{bytes, path}`` structs, read as the same images."""
    copy = tmp_path / "copy"
    shutil.copytree(raw_benchmark, copy)
    without_card(copy)
    for path in copy.glob("*/*.parquet"):
        table = pq.read_table(path)
        assert b"huggingface" in table.schema.metadata
        pq.write_table(table.replace_schema_metadata(None), path)
    same_records(prepared("mllmu_bench", raw_benchmark, tmp_path / "a"), prepared("mllmu_bench", copy, tmp_path / "b"))


def test_a_config_with_one_split_is_read_whatever_the_split_is_called(clear_raw, tmp_path):
    """Older CLEAR revisions gave real_world a single ``test`` split."""
    copy = tmp_path / "copy"
    shutil.copytree(clear_raw, copy)
    shard(copy, "real_world").rename(copy / "real_world" / "test-00000-of-00001.parquet")
    card = (copy / "README.md").read_text()
    (copy / "README.md").write_text(card.replace("  - split: train\n    path: real_world/train-*",
                                                 "  - split: test\n    path: real_world/test-*"))
    out = prepared("clear", copy, tmp_path / "out")
    assert read_manifest(out)["splits_read"] == {"real_world": "test"}
    assert (out / "splits/real_world.jsonl").read_bytes() == \
        (prepared("clear", clear_raw, tmp_path / "original") / "splits/real_world.jsonl").read_bytes()
    without_card(copy)  # and without the card, from the file names
    assert prepare("clear", tmp_path / "cardless", "--path", str(copy)) is None
    assert read_manifest(tmp_path / "cardless")["splits_read"] == {"real_world": "test"}


def test_the_first_retain_perturbed_without_names_is_named_from_its_images(tmp_path):
    """The first retain_perturbed had no ``name``/``perturbed_names``: each row's image says whose face
    it is (the record of ``full`` with that image); the wrong names are other authors'."""
    configs = clear_configs()
    old = datasets.Features({k: v for k, v in FEATURES["perturbed"].items() if k not in ("name", "perturbed_names")})
    configs["retain_perturbed"] = (old, [{k: v for k, v in row.items() if k in old}
                                         for row in configs["retain_perturbed"][1]])
    out = prepared("clear", write_clear(tmp_path / "raw", configs), tmp_path / "out")
    questions = {r.name: [i for i in r.multiple_choice] for r in read_split(out, "retain_99") if r.multiple_choice}
    assert sorted(questions) == sorted(author for author, _ in RETAIN_PERTURBED)
    for name, (item,) in questions.items():
        assert item.question == NAME_QUESTION and item.answer_text == name and len(item.options) == 4
        assert set(item.options.values()) <= set(AUTHORS)
    counts = read_manifest(out)["name_questions"]
    assert counts["retain_99"] == {"name taken from the image's record in 'full'": 8,
                                   "wrong names topped up from other authors": 8}
    # At 5 % the forget author's row is still recognised (by its image) and left out.
    assert counts["retain_95"]["perturbed rows of forget authors, left out"] == 1


def test_the_stage_prints_where_the_rows_went(clear_raw, tmp_path):
    result = run_stage("prepare_benchmark", "--format", "clear", "--path", clear_raw, "--out", tmp_path / "out")
    lines = result.stdout.splitlines()
    assert lines[0] == f"prepared clear from path '{clear_raw}' into {tmp_path / 'out'}"
    assert "  full+tofu: 50 rows: 20 read; 30 skipped: image row (its image and caption are read from 'full')" in lines
    assert "  retain_99: 19 images have no name question (no perturbed row shows them)" in lines


def test_the_source_is_named_explicitly(clear_raw, tmp_path, capsys):
    for arguments in ([], ["--hub", "therem/CLEAR", "--path", str(clear_raw)]):
        with pytest.raises(SystemExit) as exit:
            prepare_benchmark.build_parser().parse_args(["--format", "clear", "--out", str(tmp_path), *arguments])
        assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "one of the arguments --hub --path is required" in err and "--path: not allowed with argument --hub" in err
