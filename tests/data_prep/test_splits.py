import warnings

import pandas as pd
import pytest

from data_prep import splits
from data_prep.errors import DataError


def _rows(n_patients: int = 20, images_per_patient: int = 3) -> list[tuple[str, str, str]]:
    """Patients P00..; every 4th patient is "covid", the rest "normal"; one odd image per patient of
    the other class so the majority label matters."""
    rows = []
    for p in range(n_patients):
        label = "covid" if p % 4 == 0 else "normal"
        other = "normal" if label == "covid" else "covid"
        for i in range(images_per_patient):
            rows.append((f"P{p:02d}/img{i}", f"P{p:02d}", other if i == 0 else label))
    return rows


def _patient_labels(table: pd.DataFrame, split: str) -> dict[str, str]:
    part = table[table["split"] == split]
    return {pid: group["label"].mode().iloc[0] for pid, group in part.groupby("patient_id")}


def test_patient_split_is_patient_disjoint_and_stratified():
    table = splits.patient_split(_rows(), val=0.2, test=0.2, seed=3)
    assert list(table.columns) == ["key", "patient_id", "label", "group_kind", "split"]
    assert table["patient_id"].groupby(table["patient_id"]).size().eq(3).all()
    assert (table.groupby("patient_id")["split"].nunique() == 1).all()
    # 5 covid patients -> 1 test, 1 val, 3 train; 15 normal -> 3 test, 3 val, 9 train
    for split, (n_covid, n_normal) in {"train": (3, 9), "val": (1, 3), "test": (1, 3)}.items():
        labels = list(_patient_labels(table, split).values())
        assert (labels.count("covid"), labels.count("normal")) == (n_covid, n_normal), split
    assert set(table["group_kind"]) == {"patient"}
    splits.check_no_leakage(table)


def test_patient_split_is_deterministic_and_depends_on_seed():
    first = splits.patient_split(_rows(), seed=1)
    pd.testing.assert_frame_equal(first, splits.patient_split(list(reversed(_rows())), seed=1))
    assert not first["split"].equals(splits.patient_split(_rows(), seed=2)["split"])


def test_patient_split_rejects_bad_fractions():
    with pytest.raises(ValueError, match="sum to < 1"):
        splits.patient_split(_rows(), val=0.5, test=0.5)


def test_kfold_split_assigns_each_patient_one_fold_balanced_by_label():
    table = splits.kfold_split(_rows(), folds=5, seed=0)
    assert list(table.columns) == ["key", "patient_id", "label", "group_kind", "split", "fold"]
    assert (table.groupby("patient_id")["fold"].nunique() == 1).all()
    folds = table.groupby("patient_id")["fold"].first()
    # 20 patients / 5 folds = 4 per fold; the 5 covid patients go one to each fold
    assert folds.value_counts().sort_index().tolist() == [4, 4, 4, 4, 4]
    covid_patients = [f"P{p:02d}" for p in range(0, 20, 4)]
    assert sorted(folds[covid_patients]) == [0, 1, 2, 3, 4]
    train, val = splits.fold_subsets(table, 2)
    assert set(val["fold"]) == {2} and 2 not in set(train["fold"])
    assert len(train) + len(val) == len(table)


def test_kfold_split_with_held_out_test():
    table = splits.kfold_split(_rows(), folds=3, test=0.2, seed=0)
    test_patients = table[table["split"] == "test"]["patient_id"].unique()
    assert len(test_patients) == 4  # 1 of 5 covid + 3 of 15 normal
    assert set(table[table["split"] == "test"]["fold"]) == {-1}
    splits.check_no_leakage(table)


def test_check_no_leakage_names_the_planted_patient():
    table = splits.patient_split(_rows(), seed=0)
    moved = table.copy()
    first_p07 = moved.index[moved["patient_id"] == "P07"][0]
    moved.loc[first_p07, "split"] = "test" if moved.loc[first_p07, "split"] != "test" else "train"
    with pytest.raises(splits.LeakageError, match=r"patients in more than one split: P07 \(") as caught:
        splits.check_no_leakage(moved)
    assert caught.value.patient_ids == ["P07"]
    assert isinstance(caught.value, DataError)


def test_check_no_leakage_across_folds():
    table = splits.kfold_split(_rows(), folds=2, seed=0)
    row = table.index[table["patient_id"] == "P01"][0]
    table.loc[row, "fold"] = 1 - table.loc[row, "fold"]
    with pytest.raises(splits.LeakageError, match=r"split table: patients in more than one split: P01 \("):
        splits.check_no_leakage(table)


def test_rows_without_patient_ids_fall_back_to_image_level_with_warning():
    rows = [(f"img{i:02d}", None, "covid" if i < 10 else "normal") for i in range(20)]
    rows += [("withid_a", "Q1", "covid"), ("withid_b", "Q1", "covid")]
    with pytest.warns(
        UserWarning, match="20 of 22 records have no patient id; they are split image by image"
    ):
        table = splits.patient_split(rows, val=0.2, test=0.2, seed=0)
    by_key = table.set_index("key")
    assert by_key.loc["img00", "group_kind"] == "image" and by_key.loc["img00", "patient_id"] is None
    assert by_key.loc["withid_a", "group_kind"] == "patient"
    assert by_key.loc["withid_a", "split"] == by_key.loc["withid_b", "split"]
    # covid: 11 groups (10 images + Q1) -> 2.2, 2.2, 6.6 -> 2 test, 2 val, 7 train; normal: 10 -> 2, 2, 6
    groups = table["patient_id"].fillna(table["key"])
    for label, expected in {"covid": [2, 2, 7], "normal": [2, 2, 6]}.items():
        counts = groups[table["label"] == label].groupby(table["split"]).nunique()
        assert [counts.get(split, 0) for split in ("test", "val", "train")] == expected, label


def test_no_warning_when_every_row_has_an_id():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        splits.patient_split(_rows(), seed=0, id_kind="inferred")


def test_inferred_ids_recorded_as_group_kind():
    table = splits.patient_split(_rows(), seed=0, id_kind="inferred")
    assert set(table["group_kind"]) == {"inferred"}


def test_rows_may_carry_their_own_id_kind():
    rows = [("a", "P1", "x", "patient"), ("b", "vol7", "x", "inferred"), ("c", "P2", "y")]
    table = splits.patient_split(rows, val=0.0, test=0.0)
    assert table.set_index("key")["group_kind"].to_dict() == {"a": "patient", "b": "inferred", "c": "patient"}
    with pytest.raises(ValueError, match=r"id kinds must be 'patient' or 'inferred', got \['guess'\]"):
        splits.patient_split([("a", "P1", "x", "guess")])


def test_csv_round_trip(tmp_path):
    rows = _rows() + [("loose", None, "covid")]
    with pytest.warns(UserWarning):
        table = splits.kfold_split(rows, folds=3, test=0.1, seed=4)
    path = tmp_path / "split.csv"
    splits.save_split(table, path)
    assert path.read_text().splitlines()[0] == "key,patient_id,label,group_kind,split,fold"
    assert [p.name for p in tmp_path.iterdir()] == ["split.csv"]  # no temporary left behind
    pd.testing.assert_frame_equal(splits.load_split(path), table, check_dtype=False)


def test_load_split_rejects_missing_columns(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("key,label,split\na,covid,train\n")
    with pytest.raises(
        DataError, match=f"{path}: missing columns patient_id; expected key, patient_id, label, split"
    ):
        splits.load_split(path)


def test_load_split_rejects_unknown_split_values(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("key,patient_id,label,split\na,P1,covid,training\n")
    with pytest.raises(DataError, match=r"unknown split values \['training'\]"):
        splits.load_split(path)


def test_load_split_rechecks_leakage(tmp_path):
    path = tmp_path / "leaky.csv"
    path.write_text("key,patient_id,label,split\na,P1,covid,train\nb,P1,covid,test\nc,P2,normal,val\n")
    with pytest.raises(
        splits.LeakageError, match=rf"{path}: patients in more than one split: P1 \(test, train\)"
    ):
        splits.load_split(path)


@pytest.mark.shared_data
def test_patient_split_of_real_lidc_slices(shared_data):
    from data_prep.adapters.lidc import LidcNoduleSlices

    records = list(LidcNoduleSlices(shared_data / "nodule-lidc").records())
    rows = [(r.key, r.patient_id, "+".join(r.labels) or "none") for r in records]
    table = splits.patient_split(rows, val=0.125, test=0.125, seed=0)
    splits.check_no_leakage(table)
    # 8 patients (README): 1 test, 1 val, 6 train; 108 slices in all
    patients = table.groupby("split")["patient_id"].nunique().to_dict()
    assert patients == {"test": 1, "train": 6, "val": 1}
    assert len(table) == 108 and set(table["group_kind"]) == {"patient"}


def test_save_split_into_a_missing_folder_names_it(tmp_path):
    table = splits.patient_split(_rows(), seed=0)
    with pytest.raises(DataError, match=f"{tmp_path / 'missing'}: output folder does not exist"):
        splits.save_split(table, tmp_path / "missing" / "split.csv")


def test_check_record_ids_sees_a_patient_the_file_splits_under_per_slice_ids():
    # The file groups by per-slice ids s0..s3, so its own check passes; the records say s0, s1 are P1.
    table = pd.DataFrame(
        {
            "key": ["a", "b", "c", "d"],
            "patient_id": ["s0", "s1", "s2", "s3"],
            "split": ["train", "test", "val", "val"],
        }
    )
    splits.check_no_leakage(table)
    with pytest.raises(splits.LeakageError) as caught:
        splits.check_record_ids(table, ["P1", "P1", None, ""], "split.csv")
    assert (
        str(caught.value)
        == "split.csv: patients (by the records' own ids) in more than one split: P1 (test, train)"
    )
    assert caught.value.patient_ids == ["P1"]
    splits.check_record_ids(table, ["P1", "P2", "P3", "P3"], "split.csv")  # one split each: accepted


def test_check_record_ids_across_folds_and_row_count():
    table = pd.DataFrame({"split": ["train", "train"], "fold": [0, 1]})
    with pytest.raises(splits.LeakageError, match=r"P1 \(train/0, train/1\)"):
        splits.check_record_ids(table, ["P1", "P1"], "folds.csv")
    with pytest.raises(ValueError, match="3 record ids for a split table of 2 rows"):
        splits.check_record_ids(table, ["P1", "P2", "P3"], "folds.csv")


def _policy_rows(publisher: dict[int, str | None]) -> pd.DataFrame:
    """Patients P00..P09 with 2 images each (P0x/img0, img1), "covid" for even patients; patient p's
    publisher split is publisher[p]; P09's images have no id (kind "patient" all the same)."""
    rows = [
        (
            f"P{p:02d}/img{i}",
            None if p == 9 else f"P{p:02d}",
            "covid" if p % 2 == 0 else "normal",
            publisher[p],
            "patient",
        )
        for p in range(10)
        for i in range(2)
    ]
    return pd.DataFrame(rows, columns=list(splits.POLICY_COLUMNS))


def _patients_by_split(table: pd.DataFrame) -> dict[str, list[str]]:
    named = table.assign(who=table["patient_id"].fillna(table["key"]))
    return {split: sorted(set(part["who"])) for split, part in named.groupby("split")}


@pytest.mark.filterwarnings("ignore:2 of 20 records have no patient id")
def test_policy_split_patient_mode_is_a_fresh_patient_split():
    rows = _policy_rows(dict.fromkeys(range(10), "train"))
    table, source = splits.policy_split(rows, "patient", 0.2, 0.2, 3, complete=True)
    expected = splits.patient_split(
        rows[["key", "patient_id", "label", "kind"]].itertuples(index=False), 0.2, 0.2, 3
    )
    assert source == "patient-wise"
    pd.testing.assert_frame_equal(table, expected)
    assert list(table.columns) == list(splits.TABLE_COLUMNS)


def test_policy_split_publisher_mode_uses_complete_publisher_splits_as_they_are():
    publisher = {p: ("train", "val", "test")[p % 3] for p in range(10)}
    rows = _policy_rows(publisher)
    for complete in (True, False):
        table, source = splits.policy_split(rows, "publisher", 0.2, 0.2, 0, complete=complete)
        assert source == "publisher"
        assert table["split"].tolist() == rows["publisher"].tolist()
        assert table["group_kind"].tolist() == ["patient"] * 18 + ["image"] * 2


def test_policy_split_carves_val_from_train_when_completing():
    publisher = {p: "test" if p >= 8 else "train" for p in range(10)}  # P08, P09 (no id) in test
    table, source = splits.policy_split(_policy_rows(publisher), "publisher", 0.25, 0.0, 0, complete=True)
    assert source == "publisher test as test, val carved from train"
    by_split = _patients_by_split(table)
    assert by_split["test"] == ["P08", "P09/img0", "P09/img1"]
    assert len(by_split["val"]) == 2 and len(by_split["train"]) == 6  # 25% of the 8 train patients
    assert set(by_split["val"] + by_split["train"]) == {f"P{p:02d}" for p in range(8)}
    assert table.loc[table["split"] == "test", "group_kind"].tolist() == [
        "patient",
        "patient",
        "image",
        "image",
    ]
    val_table, val_source = splits.policy_split(
        _policy_rows({p: "val" if p >= 8 else "train" for p in range(10)}), "publisher", 0.25, 0.0, 0, True
    )
    assert val_source == "publisher val as test, val carved from train"
    pd.testing.assert_frame_equal(val_table, table)  # the same cases, the publisher's val used as test


@pytest.mark.filterwarnings("ignore:2 of 20 records have no patient id")
def test_policy_split_as_given_keeps_incomplete_publisher_splits():
    publisher = {p: "test" if p >= 8 else "train" for p in range(10)}
    table, source = splits.policy_split(_policy_rows(publisher), "publisher", 0.25, 0.0, 0, complete=False)
    assert source == "publisher"
    assert _patients_by_split(table)["test"] == ["P08", "P09/img0", "P09/img1"]
    only_train = _policy_rows(dict.fromkeys(range(10), "train"))
    assert set(splits.policy_split(only_train, "publisher", 0.2, 0.2, 0, complete=False)[0]["split"]) == {
        "train"
    }
    fresh, source = splits.policy_split(only_train, "publisher", 0.2, 0.2, 0, complete=True)
    assert source == "patient-wise" and set(fresh["split"]) == {"train", "val", "test"}
    nothing = _policy_rows(dict.fromkeys(range(10)))
    assert splits.policy_split(nothing, "publisher", 0.2, 0.2, 0, complete=False)[1] == "patient-wise"


def test_policy_split_refuses_partial_or_unusable_publisher_splits():
    partial = _policy_rows({p: None if p == 0 else ("train", "val", "test")[p % 3] for p in range(10)})
    for complete in (True, False):
        with pytest.raises(
            DataError, match="^/data/set: some records have a publisher split and some do not"
        ):
            splits.policy_split(partial, "publisher", 0.2, 0.2, 0, complete, where="/data/set")
    no_train = _policy_rows({p: ("val", "test")[p % 2] for p in range(10)})
    with pytest.raises(DataError, match=r"publisher splits \['test', 'val'\] need train plus val or test"):
        splits.policy_split(no_train, "publisher", 0.2, 0.2, 0, complete=True)
    with pytest.raises(ValueError, match="split mode must be patient or publisher; got 'file'"):
        splits.policy_split(no_train, "file", 0.2, 0.2, 0, complete=True)
