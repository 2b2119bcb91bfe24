"""Reading MLLMU-Bench-schema data into canonical records (the same code reads the hub)."""

import io
import json
import shutil

import datasets
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline_steps.benchmarks.mllmu import SYNTHETIC_WORLD_FILE, TASK_MODALITY, protocol, read_mllmu
from pipeline_steps.benchmarks.synthetic.mllmu_writer import WORLD_FILE
from pipeline_steps.benchmarks.records import read_manifest, read_split
from pipeline_steps.benchmarks.source import Source

from helpers import call_stage, copy_without_config, edit_rows, run_stage, shard


def test_prepared_benchmark_has_every_split(benchmark):
    manifest = read_manifest(benchmark)
    assert manifest["forget_ratios"] == [5, 10, 15]
    assert manifest["vqa_training_pairs_from"] == {"ft_Data metadata": 40}
    assert manifest["text_training_pairs_from"] == "ft_Text"
    assert manifest["protocol"] == "synthetic_mllmu"  # the synthetic writer's world.json is beside the configs
    names = {p.stem for p in (benchmark / "splits").glob("*.jsonl")}
    assert names == {"full", "real_world", "test", "forget_5", "forget_10", "forget_15", "retain_95",
                     "retain_90", "retain_85", "holdout"}
    assert len(read_split(benchmark, "full")) == 40
    assert len(read_split(benchmark, "forget_10")) + len(read_split(benchmark, "retain_90")) == 40


def test_records_match_the_raw_rows(benchmark, raw_benchmark):
    raw = {row["ID"]: row for row in datasets.load_dataset(str(raw_benchmark), "Full_Set", split="train")}
    metadata = {row["ID"]: json.loads(row["metadata"])
                for row in datasets.load_dataset(str(raw_benchmark), "ft_Data", split="train")}
    text_pairs = {row["ID"]: json.loads(row["metadata"])
                  for row in datasets.load_dataset(str(raw_benchmark), "ft_Text", split="train")}
    for record in read_split(benchmark, "forget_15"):
        row = raw[record.id]
        assert record.name == json.loads(row["biography"])["Name"]
        vqa = [(p.question, p.answer) for p in record.train if p.modality == "vqa"]
        assert vqa == [(m["Question"], m["Answer"]) for m in metadata[record.id]]
        text = [(p.question, p.answer) for p in record.train if p.modality == "text"]
        assert text == [(m["Question"], m["Answer"]) for m in text_pairs[record.id]]  # from ft_Text
        assert [c.answer for c in record.multiple_choice if c.modality == "vqa"] == \
            [q["Correct_Answer"] for q in row["Classification_Task"]["Image_Textual_Questions"]]
        assert (benchmark / record.image).read_bytes()  # the image is on disk


def test_generation_blanks_real_world_and_test_split_match_the_raw_rows(benchmark, raw_benchmark):
    """Generation_Task -> generation items, Mask_Task -> blanks (Image_Textual: vqa, Pure_Text: text),
    Retain_Set -> real_world, Test_Set -> test with one of the row's transformed images."""
    def open_items(tasks):
        return [(TASK_MODALITY[t["Type"]], t["Question"], t["Ground_Truth"]) for t in tasks]

    def as_tuples(items):
        return [(i.modality, i.question, i.answer) for i in items]

    rows = {row["ID"]: row for row in datasets.load_dataset(str(raw_benchmark), "forget_10", split="train")}
    for record in read_split(benchmark, "forget_10"):
        row = rows.pop(record.id)
        assert as_tuples(record.generation) == open_items(row["Generation_Task"]) != []
        assert as_tuples(record.fill_blank) == open_items(row["Mask_Task"]) != []
        assert {i.modality for i in record.generation} == {"vqa", "text"}
        assert any("__" in i.question for i in record.fill_blank)
    assert not rows

    real = {row["ID"]: row for row in datasets.load_dataset(str(raw_benchmark), "Retain_Set", split="train")}
    records = read_split(benchmark, "real_world")
    assert sorted(r.id for r in records) == sorted(real)
    for record in records:
        classification = real[record.id]["Classification_Task"]
        assert [c.question for c in record.multiple_choice] == [
            q["Question"] for q in classification["Image_Textual_Questions"] + classification["Pure_Text_Questions"]]

    test = {row["ID"]: row for row in datasets.load_dataset(str(raw_benchmark), "Test_Set", split="train").cast_column(
        "images", datasets.List(datasets.Image(decode=False)))}
    records = read_split(benchmark, "test")
    assert sorted(r.id for r in records) == sorted(test)
    for record in records:
        row = test[record.id]
        assert as_tuples(record.generation) == open_items(row["Generation_Task"])
        assert {i.modality for i in record.multiple_choice} == {"vqa"}
        stored = (benchmark / record.image).read_bytes()
        assert any(stored == image["bytes"] for image in row["images"])


def test_profile_metadata_and_json_list_question_answer_columns(tmp_path):
    """Rows that carry their own JSON ``metadata``, or JSON lists in ``question``/``answer``, are read
    as the card allows, and the manifest says which was used."""
    image = {"bytes": _png(), "path": None}
    task = {"Image_Textual_Questions": [{"Question": "Who is shown?", "Options": {"A": "Ann", "B": "Bo", "C": "Cy",
                                                                                  "D": "Di"}, "Correct_Answer": "B"}],
            "Pure_Text_Questions": []}
    generation = [{"Type": "Pure_Text", "Question": "Where does Bo live?", "Ground_Truth": "Oslo"}]
    full = [{"image": image, "ID": str(k), "biography": json.dumps({"Name": f"P{k}"}),
             "metadata": json.dumps([{"Question": "Job?", "Answer": f"Job {k}"}]) if k == 0 else None,
             "question": json.dumps(["Age?", "Town?"]) if k == 1 else None,
             "answer": json.dumps([f"{k}0", f"Town {k}"]) if k == 1 else None,
             "Classification_Task": task, "Generation_Task": generation, "Mask_Task": []} for k in range(2)]
    configs = {"Full_Set": full, "forget_5": full[:1], "retain_95": full[1:], "Retain_Set": full[:1],
               "Test_Set": [{"images": [image], "ID": "0", "Classification_Task": task, "Generation_Task": [],
                             "Mask_Task": []}]}
    raw = tmp_path / "raw"
    card = ["---", "configs:"]
    for name, rows in configs.items():
        (raw / name).mkdir(parents=True)
        datasets.Dataset.from_list(rows).to_parquet(str(raw / name / "train-00000-of-00001.parquet"))
        card += [f"- config_name: {name}", "  data_files:", "  - split: train", f"    path: {name}/train-*"]
    (raw / "README.md").write_text("\n".join(card + ["---", ""]))
    manifest = read(raw, tmp_path / "out")
    assert manifest["vqa_training_pairs_from"] == {"metadata": 1, "question/answer": 1}
    assert manifest["forget_ratios"] == [5]
    first, second = read_split(tmp_path / "out", "full")
    assert [(p.question, p.answer) for p in first.train] == [("Job?", "Job 0")]
    assert [(p.question, p.answer) for p in second.train] == [("Age?", "10"), ("Town?", "Town 1")]
    assert first.name == "P0" and first.generation[0].modality == "text"
    assert read_split(tmp_path / "out", "test")[0].multiple_choice[0].answer == "B"


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_images_are_stored_once(benchmark):
    full = {r.id: r.image for r in read_split(benchmark, "full")}
    for record in read_split(benchmark, "forget_5"):
        assert record.image == full[record.id]


def read(source, out, seed=0):
    """As prepare_benchmark reads a local copy: through a cache of its own."""
    return read_mllmu(Source.path(source, cache_dir=str(out.parent / f"{out.name}-cache")), out, seed=seed)


def test_test_split_picks_one_transformed_image_per_profile_reproducibly(raw_benchmark, tmp_path):
    first = read(raw_benchmark, tmp_path / "a", seed=7)
    read(raw_benchmark, tmp_path / "b", seed=7)
    read(raw_benchmark, tmp_path / "c", seed=8)
    assert first["seed"] == 7
    picks = [[r.image for r in read_split(tmp_path / name, "test")] for name in "abc"]
    assert picks[0] == picks[1]
    assert picks[0] != picks[2]
    full = {r.id: r.image for r in read_split(tmp_path / "a", "full")}
    assert all(r.image != full[r.id] for r in read_split(tmp_path / "a", "test"))


def _rewrite(raw_benchmark, tmp_path, config, change):
    copy = tmp_path / "raw"
    shutil.copytree(raw_benchmark, copy)
    table = datasets.load_dataset(str(copy), config, split="train", cache_dir=str(tmp_path / "rewrite-cache"))
    for stale in (copy / config).glob("*.parquet"):
        stale.unlink()
    change(table).to_parquet(str(copy / config / "train-00000-of-00001.parquet"))
    return copy


def test_question_answer_columns_are_used_without_ft_data(raw_benchmark, tmp_path):
    copy = copy_without_config(raw_benchmark, tmp_path / "raw", "ft_Data")
    manifest = read(copy, tmp_path / "out")
    assert manifest["vqa_training_pairs_from"] == {"question/answer": 40}
    record = read_split(tmp_path / "out", "full")[0]
    assert [p.question for p in record.train if p.modality == "vqa"] == ["Who is the person in the image?"]


def test_a_profile_in_both_forget_and_retain_is_refused(raw_benchmark, tmp_path):
    forget_id = datasets.load_dataset(str(raw_benchmark), "forget_5", split="train")[0]["ID"]
    full = datasets.load_dataset(str(raw_benchmark), "Full_Set", split="train")
    leaked = full.filter(lambda row: row["ID"] == forget_id).remove_columns(["Directory"])
    copy = _rewrite(raw_benchmark, tmp_path, "retain_95",
                    lambda table: datasets.concatenate_datasets([table, leaked.cast(table.features)]))
    with pytest.raises(ValueError, match=f"'{forget_id}'.*both forget_5 and retain_95"):
        read(copy, tmp_path / "out")


def test_a_wrong_correct_answer_letter_is_refused(raw_benchmark, tmp_path):
    def corrupt(table):
        def change(row):
            row["Classification_Task"]["Image_Textual_Questions"][0]["Correct_Answer"] = "E"
            return row
        return table.map(change)
    copy = _rewrite(raw_benchmark, tmp_path, "Full_Set", corrupt)
    with pytest.raises(ValueError, match="correct answer 'E' is not one of the options"):
        read(copy, tmp_path / "out")


def test_missing_local_path_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="--path '.*nowhere' does not exist"):
        call_stage("prepare_benchmark", "--format", "mllmu_bench", "--path", str(tmp_path / "nowhere"),
                  "--out", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_the_manifest_accounts_for_every_row(raw_benchmark, tmp_path):
    """A repeated profile is merged; ft_Data and Test_Set rows that yield nothing are skipped by id."""
    copy = tmp_path / "copy"
    shutil.copytree(raw_benchmark, copy)
    edit_rows("Full_Set", lambda rows: rows + [rows[5]])(copy)  # an identical repeat: merged
    edit_rows("ft_Data", lambda rows: rows + [dict(rows[0], ID="999"), rows[1], dict(rows[2], metadata="[]")])(copy)
    edit_rows("Test_Set", lambda rows: rows[:-1] + [dict(rows[-1], images=[])], 1)(copy)
    out = tmp_path / "out"
    rows = read(copy, out)["rows"]
    full_ids = [r.id for r in read_split(out, "full")]
    assert len(full_ids) == 40 and rows["Full_Set"]["rows"] == 41 and rows["Full_Set"]["read"] == 40
    assert rows["Full_Set"]["merged"]["into"] == {full_ids[5]: 1}
    ft = datasets.load_dataset(str(raw_benchmark), "ft_Data", split="train")
    assert rows["ft_Data"]["rows"] == 43 and rows["ft_Data"]["read"] == 40
    assert rows["ft_Data"]["merged"] == {"count": 1, "records": 1, "into": {ft[1]["ID"]: 1}}
    assert rows["ft_Data"]["skipped"] == {"no such profile in Full_Set": {"count": 1, "ids": ["999"]},
                                          "no VQA pairs in its metadata": {"count": 1, "ids": [ft[2]["ID"]]}}
    last_test_id = pq.read_table(shard(raw_benchmark, "Test_Set", 1)).column("ID")[-1].as_py()
    assert rows["Test_Set"]["skipped"] == {"no transformed images": {"count": 1, "ids": [last_test_id]}}
    assert len(read_split(out, "test")) == 39


def test_the_protocol_is_the_synthetic_one_only_beside_the_world_file(tmp_path):
    """The synthetic benchmark teaches option-text answers (its own strict rule); a copy of the
    real data, or any source without the writer's world.json, is read by MLLMU-Bench's rule."""
    assert protocol(Source.path(tmp_path)) == "mllmu_bench"
    assert SYNTHETIC_WORLD_FILE == WORLD_FILE  # the file the writer writes
    (tmp_path / WORLD_FILE).write_text("{}")
    assert protocol(Source.path(tmp_path)) == "synthetic_mllmu"
    assert protocol(Source.hub("MLLMMU/MLLMU-Bench")) == "mllmu_bench"


def _same_records(first, second, rows_first: dict, rows_second: dict) -> None:
    """The two prepared benchmarks hold byte-identical splits and images and the same row account."""
    names = sorted(p.name for p in (first / "splits").iterdir())
    assert names and names == sorted(p.name for p in (second / "splits").iterdir())
    for name in names:
        assert (first / "splits" / name).read_bytes() == (second / "splits" / name).read_bytes(), name
    assert sorted(p.name for p in (first / "images").iterdir()) == sorted(p.name for p in (second / "images").iterdir())
    assert rows_first == rows_second


def _without_ft_id(way: str):
    """ft_Data rewritten without its ``ID`` column, its person left to be found ``way``."""
    def change(root):
        full = {row["ID"]: row["biography"] for row in pq.read_table(shard(root, "Full_Set")).to_pylist()}

        def rows(ft):
            out = []
            for row in ft:
                pairs = json.loads(row["metadata"])
                if way == "metadata ID":
                    pairs = [dict(pair, ID=row["ID"]) for pair in pairs]
                new = {"image": row["image"], "metadata": json.dumps(pairs)}
                if way == "biography Name":
                    new["biography"] = full[row["ID"]]
                out.append(new)
            return out
        edit_rows("ft_Data", rows)(root)
    return change


def test_the_full_schema_manifest_names_the_columns_it_used(benchmark):
    used = read_manifest(benchmark)["columns_used"]
    pairs = sum(len([p for p in r.train if p.modality == "vqa"]) for r in read_split(benchmark, "full"))
    assert used == {"ft_Data person from": {"ID": pairs}, "Test_Set images from": "images"}


@pytest.mark.parametrize("way", ["metadata ID", "biography Name", "image"])
def test_ft_data_without_id_gives_the_same_records(benchmark, raw_benchmark, tmp_path, way):
    """A revision whose ft_Data has no ``ID`` column: each pair's person is found as the authors' code
    finds it (the pair's own ``ID``), else by the row's biography Name, else by its portrait."""
    copy = tmp_path / "raw"
    shutil.copytree(raw_benchmark, copy)
    _without_ft_id(way)(copy)
    assert "ID" not in pq.read_table(shard(copy, "ft_Data")).column_names
    manifest = read(copy, tmp_path / "out")
    _same_records(benchmark, tmp_path / "out", read_manifest(benchmark)["rows"], manifest["rows"])
    pairs = sum(len([p for p in r.train if p.modality == "vqa"]) for r in read_split(benchmark, "full"))
    assert manifest["columns_used"]["ft_Data person from"] == {way: pairs}


def test_an_ft_data_row_that_names_no_profile_is_refused_with_the_fix(raw_benchmark, tmp_path):
    copy = tmp_path / "raw"
    shutil.copytree(raw_benchmark, copy)
    _without_ft_id("biography Name")(copy)
    edit_rows("ft_Data", lambda rows: [dict(rows[0], biography=json.dumps({"Name": "Nobody Known"}),
                                            image={"bytes": _png(), "path": None}), *rows[1:]])(copy)
    with pytest.raises(ValueError) as error:
        read(copy, tmp_path / "out")
    message = str(error.value)
    assert "config 'ft_Data', row 0: cannot tell whose VQA pairs these are" in message
    assert "its biography Name 'Nobody Known' is no Full_Set profile's name" in message
    assert "its image is no Full_Set profile's portrait" in message
    assert "add an 'ID' column naming each row's Full_Set profile" in message


def test_test_set_with_image_instead_of_images_gives_the_same_records(raw_benchmark, tmp_path):
    """The authors' evaluation reads a Test_Set row's ``image`` when it has no ``images``: so do we."""
    one, single = tmp_path / "one", tmp_path / "single"
    for root, column in ((one, "images"), (single, "image")):
        shutil.copytree(raw_benchmark, root)
        for index in (0, 1):
            edit_rows("Test_Set", lambda rows, column=column: [
                {**{k: v for k, v in row.items() if k != "images"},
                 column: [row["images"][0]] if column == "images" else row["images"][0]} for row in rows], index)(root)
    first, second = read(one, tmp_path / "a"), read(single, tmp_path / "b")
    _same_records(tmp_path / "a", tmp_path / "b", first["rows"], second["rows"])
    assert first["columns_used"]["Test_Set images from"] == "images"
    assert second["columns_used"]["Test_Set images from"] == "image"
    assert len(read_split(tmp_path / "b", "test")) == first["splits"]["test"] > 0
