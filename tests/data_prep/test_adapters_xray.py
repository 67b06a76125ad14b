"""Tests for the X-ray and image-classification adapters: covid_qu_ex, image_folder, covid_chestxray, covidx.

Synthetic layouts of 16x16 files in tmp_path check exact keys, labels, ids and errors; the shared
subsets check the counts and encodings their READMEs state.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from data_prep.adapters.base import get_adapter
from data_prep.adapters.covid_chestxray import CovidChestXray, finding_label
from data_prep.adapters.covid_qu_ex import CovidQuEx
from data_prep.adapters.covidx import Covidx, LabelLine, parse_label_line
from data_prep.adapters.image_folder import ImageFolder
from data_prep.errors import DataError

INFECTION = "Infection Segmentation Data"


def _png(path: Path, image: np.ndarray, ext: str = ".png") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(ext, image)
    assert ok
    path.write_bytes(data.tobytes())
    return path


def _image(value: int, size: int = 16) -> np.ndarray:
    return np.full((size, size), value, np.uint8)


def _mask(drawn: bool, size: int = 16) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    if drawn:
        mask[4:8, 4:10] = 255
    return mask


def _qu_ex_class(part: Path, split: str, label: str, names: list[str], infection: bool | None) -> None:
    """Writes one class folder: images, lung masks and (unless infection is None) infection masks."""
    for index, name in enumerate(names):
        _png(part / split / label / "images" / name, _image(10 * (index + 1)))
        _png(part / split / label / "lung masks" / name, _mask(True))
        if infection is not None:
            _png(part / split / label / "infection masks" / name, _mask(infection))


@pytest.fixture
def qu_ex_root(tmp_path) -> Path:
    part = tmp_path / INFECTION
    _qu_ex_class(part, "Train", "COVID-19", ["covid_2.png", "covid_10.png"], infection=True)
    _qu_ex_class(part, "Train", "Normal", ["Normal (3).png"], infection=False)
    _qu_ex_class(part, "Val", "Non-COVID", ["non_COVID (7).png"], infection=False)
    _qu_ex_class(tmp_path / "Lung Segmentation Data", "Test", "Normal", ["Normal (1).png"], infection=None)
    return tmp_path


def test_qu_ex_reads_infection_part_by_default(qu_ex_root):
    adapter = get_adapter("covid_qu_ex")(qu_ex_root)
    assert adapter.part == "infection"
    assert adapter.splits() == ("train", "val")
    records = list(adapter.records())
    assert [r.key for r in records] == [
        "Train/COVID-19/covid_10.png",
        "Train/COVID-19/covid_2.png",
        "Train/Normal/Normal (3).png",
        "Val/Non-COVID/non_COVID (7).png",
    ]
    assert [r.labels for r in records] == [("COVID-19",), ("COVID-19",), ("Normal",), ("Non-COVID",)]
    assert [r.split for r in records] == ["train", "train", "train", "val"]
    assert [int(r.image[0, 0]) for r in records] == [20, 10, 10, 10]
    assert [int(r.masks["infection"].sum()) for r in records] == [24, 24, 0, 0]
    first = records[0]
    assert (first.modality, first.intensity, first.patient_id) == ("xray", "display", None)
    assert set(first.masks) == {"lung", "infection"}
    assert first.masks["lung"].dtype == np.uint8 and set(np.unique(first.masks["lung"])) == {0, 1}
    assert [r.key for r in adapter.records("val")] == ["Val/Non-COVID/non_COVID (7).png"]


def test_qu_ex_lung_part_and_part_folder_as_root(qu_ex_root):
    lung = CovidQuEx(qu_ex_root, part="lung")
    (record,) = lung.records()
    assert (record.key, record.split, set(record.masks)) == ("Test/Normal/Normal (1).png", "test", {"lung"})
    direct = CovidQuEx(qu_ex_root / INFECTION)
    assert direct.part == "infection" and len(list(direct.records("train"))) == 3


def test_qu_ex_missing_part_and_unknown_split(tmp_path, qu_ex_root):
    with pytest.raises(DataError) as caught:
        CovidQuEx(tmp_path / "Lung Segmentation Data" / "Test")
    assert "no 'Infection Segmentation Data' or 'Lung Segmentation Data' folder" in str(caught.value)
    with pytest.raises(ValueError, match="covid_qu_ex has no split 'test'"):
        list(CovidQuEx(qu_ex_root).records("test"))


def test_qu_ex_image_without_mask_raises(qu_ex_root):
    orphan = _png(qu_ex_root / INFECTION / "Train" / "Normal" / "images" / "Normal (9).png", _image(5))
    with pytest.raises(DataError) as caught:
        list(CovidQuEx(qu_ex_root).records())
    assert str(caught.value) == f"{orphan}: no matching file in 'lung masks'"


def test_qu_ex_mask_shape_mismatch_raises(qu_ex_root):
    mask = _png(
        qu_ex_root / INFECTION / "Val" / "Non-COVID" / "lung masks" / "non_COVID (7).png", _mask(True, 8)
    )
    with pytest.raises(DataError) as caught:
        list(CovidQuEx(qu_ex_root).records("val"))
    assert str(caught.value) == f"{mask}: mask shape (8, 8) differs from its image's (16, 16)"


def test_qu_ex_unexpected_mask_values_raise(qu_ex_root):
    bad = _mask(True)
    bad[0, 0] = 100
    mask = _png(qu_ex_root / INFECTION / "Val" / "Non-COVID" / "infection masks" / "non_COVID (7).png", bad)
    with pytest.raises(DataError) as caught:
        list(CovidQuEx(qu_ex_root).records("val"))
    assert (
        str(caught.value) == f"{mask}: unexpected mask values [0, 100, 255]; expected {{0, 255}} or {{0, 1}}"
    )


def test_qu_ex_truncated_image_raises(qu_ex_root):
    image = qu_ex_root / INFECTION / "Val" / "Non-COVID" / "images" / "non_COVID (7).png"
    image.write_bytes(image.read_bytes()[:30])
    with pytest.raises(DataError) as caught:
        list(CovidQuEx(qu_ex_root).records("val"))
    assert str(caught.value) == f"{image}: not a readable image (png is truncated: no end marker)"


def test_image_folder_ucsd_and_sars_names(tmp_path):
    _png(tmp_path / "ucsd" / "CT_COVID" / "2020.02.10.20021584-p6-52%13.png", _image(1))
    _png(tmp_path / "ucsd" / "CT_NonCOVID" / "1%0.jpg", _image(2), ".jpg")
    _png(tmp_path / "sars" / "COVID" / "Covid (1).png", _image(3))
    _png(tmp_path / "sars" / "non-COVID" / "Non-Covid (1).png", _image(4))
    ucsd = list(ImageFolder(tmp_path / "ucsd").records())
    assert [(r.key, r.labels, r.patient_id, r.source) for r in ucsd] == [
        ("CT_COVID/2020.02.10.20021584-p6-52%13.png", ("COVID",), None, None),
        ("CT_NonCOVID/1%0.jpg", ("NonCOVID",), None, None),
    ]
    sars = ImageFolder(tmp_path / "sars", modality="xray")
    assert (sars.label_names, sars.patient_ids) == (("COVID", "NonCOVID"), "none")
    records = list(sars.records())
    assert [(r.key, r.labels, r.modality) for r in records] == [
        ("COVID/Covid (1).png", ("COVID",), "xray"),
        ("non-COVID/Non-Covid (1).png", ("NonCOVID",), "xray"),
    ]
    np.testing.assert_array_equal(records[1].image, _image(4))


def _files_csv(root: Path, rows: list[tuple[str, str, str, str]]) -> None:
    with (root / "files.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label", "source_group", "ucsd_patient_id", "width"])
        writer.writerows([*row, "16"] for row in rows)


def _cvt_layout(root: Path) -> None:
    rows = [
        ("COVID/Covid (4).jpg", "COVID", "sars-cov-2-ct-scan", ""),
        ("COVID/Covid (5).jpg", "COVID", "sars-cov-2-ct-scan", ""),
        ("COVID/Covid (7).jpg", "COVID", "sars-cov-2-ct-scan", ""),
        ("COVID/img3.jpg", "COVID", "mosmeddata", ""),
        ("COVID/1%0.jpg", "COVID", "ucsd-covid-ct", "Patient 2"),
        ("NonCOVID/img3.jpg", "NonCOVID", "mosmeddata", ""),
        ("NonCOVID/nor_2_img_9.jpg", "NonCOVID", "unknown-china-negatives", ""),
        ("NonCOVID/nor_2_img_10.jpg", "NonCOVID", "unknown-china-negatives", ""),
        ("NonCOVID/Non-Covid (5).jpg", "NonCOVID", "sars-cov-2-ct-scan", ""),
    ]
    for file, *_ in rows:
        _png(root / file, _image(9), ".jpg")
    _files_csv(root, rows)


def test_image_folder_files_csv_ids(tmp_path):
    _cvt_layout(tmp_path)
    adapter = ImageFolder(tmp_path)
    assert adapter.patient_ids == "partial"
    ids = {r.key: (r.patient_id, r.source) for r in adapter.records()}
    assert ids == {
        "COVID/1%0.jpg": ("ucsd:Patient 2", "ucsd-covid-ct"),
        "COVID/Covid (4).jpg": ("group:COVID/Covid (4-5)", "sars-cov-2-ct-scan"),
        "COVID/Covid (5).jpg": ("group:COVID/Covid (4-5)", "sars-cov-2-ct-scan"),
        "COVID/Covid (7).jpg": ("group:COVID/Covid (7-7)", "sars-cov-2-ct-scan"),
        "COVID/img3.jpg": (None, "mosmeddata"),
        "NonCOVID/Non-Covid (5).jpg": ("group:NonCOVID/Non-Covid (5-5)", "sars-cov-2-ct-scan"),
        "NonCOVID/img3.jpg": (None, "mosmeddata"),
        "NonCOVID/nor_2_img_10.jpg": ("group:NonCOVID/nor_2", "unknown-china-negatives"),
        "NonCOVID/nor_2_img_9.jpg": ("group:NonCOVID/nor_2", "unknown-china-negatives"),
    }
    wider = {r.key: r.patient_id for r in ImageFolder(tmp_path, run_gap=2).records()}
    assert wider["COVID/Covid (7).jpg"] == wider["COVID/Covid (4).jpg"] == "group:COVID/Covid (4-7)"


def test_image_folder_files_csv_must_match_files(tmp_path):
    _cvt_layout(tmp_path)
    extra = _png(tmp_path / "COVID" / "Covid (9).jpg", _image(1), ".jpg")
    with pytest.raises(DataError) as caught:
        ImageFolder(tmp_path)
    assert str(caught.value) == f"{extra}: not listed in files.csv"


def test_image_folder_non_image_file_raises(tmp_path):
    _png(tmp_path / "COVID" / "a.png", _image(1))
    notes = tmp_path / "NonCOVID" / "notes.txt"
    notes.parent.mkdir()
    notes.write_text("not an image")
    with pytest.raises(DataError) as caught:
        list(ImageFolder(tmp_path).records())
    assert str(caught.value) == f"{notes}: not a readable image (unknown format, starts with b'not an i')"


def test_image_folder_empty_class_folder_raises(tmp_path):
    _png(tmp_path / "COVID" / "a.png", _image(1))
    (tmp_path / "NonCOVID").mkdir()
    with pytest.raises(DataError) as caught:
        ImageFolder(tmp_path)
    assert str(caught.value) == f"{tmp_path / 'NonCOVID'}: empty folder; expected image files"
    with pytest.raises(DataError) as caught:
        ImageFolder(tmp_path / "NonCOVID")
    assert (
        str(caught.value)
        == f"{tmp_path / 'NonCOVID'}: no class folders; expected one folder of images per class"
    )


@pytest.mark.parametrize(
    ("finding", "labels"),
    [
        ("Pneumonia/Viral/COVID-19", ("COVID",)),
        ("COVID-19, ARDS", ("COVID",)),
        ("Pneumonia/Viral/SARS", ("NonCOVID",)),
        ("No Finding", ("NonCOVID",)),
        ("todo", ()),
        ("", ()),
    ],
)
def test_finding_label_rule(finding, labels):
    assert finding_label(finding) == labels


def _chestxray_layout(root: Path) -> None:
    rows = [
        ("2", "Pneumonia/Viral/COVID-19", "X-ray", "images", "auntminnie-a 2020.jpeg"),
        ("5", "Pneumonia", "X-ray", "images", "ARDSSevere.png"),
        ("17", "Pneumonia/Viral/COVID-19", "CT", "images", "jkms-35-e79-g001-l-d.jpg"),
        ("30", "todo", "X-ray", "images", "unlabelled.png"),
        ("40", "Pneumonia/Viral/COVID-19", "CT", "volumes", "coronacases_org_001.nii.gz"),
    ]
    with (root / "metadata.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patientid", "offset", "finding", "view", "modality", "folder", "filename"])
        for patient, finding, modality, folder, filename in rows:
            writer.writerow([patient, "", finding, "PA", modality, folder, filename])
            if folder == "images":
                _png(root / folder / filename, _image(int(patient)))


def test_covid_chestxray_records(tmp_path):
    _chestxray_layout(tmp_path)
    records = list(get_adapter("covid_chestxray")(tmp_path).records())
    assert [(r.key, r.modality, r.labels, r.patient_id) for r in records] == [
        ("images/ARDSSevere.png", "xray", ("NonCOVID",), "5"),
        ("images/auntminnie-a 2020.jpeg", "xray", ("COVID",), "2"),
        ("images/jkms-35-e79-g001-l-d.jpg", "ct", ("COVID",), "17"),
        ("images/unlabelled.png", "xray", (), "30"),
    ]
    assert int(records[2].image[0, 0]) == 17
    xray_only = CovidChestXray(tmp_path, modalities=("xray",))
    assert [r.key for r in xray_only.records()] == [
        "images/ARDSSevere.png",
        "images/auntminnie-a 2020.jpeg",
        "images/unlabelled.png",
    ]


def test_covid_chestxray_bad_metadata(tmp_path):
    (tmp_path / "metadata.csv").write_text(
        "patientid,finding,modality,folder,filename\n1,COVID-19,MRI,images,a.png\n"
    )
    with pytest.raises(DataError) as caught:
        CovidChestXray(tmp_path)
    assert (
        str(caught.value)
        == f"{tmp_path / 'metadata.csv'}: line 2: unknown modality 'MRI'; expected X-ray or CT"
    )
    (tmp_path / "metadata.csv").write_text("patientid,finding,filename\n")
    with pytest.raises(DataError, match=r"missing columns \['modality', 'folder'\]"):
        CovidChestXray(tmp_path)


def test_covidx_label_line_formats():
    assert parse_label_line("419639-003251 MIDRC-RICORD-1C-419639.png positive ricord") == LabelLine(
        "419639-003251", "MIDRC-RICORD-1C-419639.png", "positive", "ricord"
    )
    assert parse_label_line("8 COVID-19 (12).png COVID-19") == LabelLine(
        "8", "COVID-19 (12).png", "COVID-19", None
    )
    assert parse_label_line("3 a.png maybe cohen") is None


def test_covidx_records(tmp_path):
    (tmp_path / "train.txt").write_text("5 ARDSSevere.png negative cohen\n2 a b.jpeg positive cohen\n\n")
    (tmp_path / "test.txt").write_text("7 x.png pneumonia\n")
    for key, value in [("train/ARDSSevere.png", 5), ("train/a b.jpeg", 2), ("test/x.png", 7)]:
        _png(tmp_path / key, _image(value))
    adapter = get_adapter("covidx")(tmp_path)
    assert adapter.splits() == ("train", "test")
    records = list(adapter.records())
    assert [(r.key, r.split, r.labels, r.patient_id, r.source) for r in records] == [
        ("test/x.png", "test", ("pneumonia",), "7", None),
        ("train/ARDSSevere.png", "train", ("negative",), "cohen:5", "cohen"),
        ("train/a b.jpeg", "train", ("positive",), "cohen:2", "cohen"),
    ]
    assert [int(r.image[0, 0]) for r in records] == [7, 5, 2]
    assert [r.key for r in adapter.records("test")] == ["test/x.png"]


def test_covidx_bad_line_and_missing_folder(tmp_path):
    (tmp_path / "train.txt").write_text("5 a.png negative cohen\n6 b.png\n")
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError) as caught:
        Covidx(tmp_path)
    assert str(caught.value).startswith(
        f"{tmp_path / 'train.txt'}: line 2: expected 'patient_id filename label"
    )
    (tmp_path / "test.txt").write_text("")
    (tmp_path / "train.txt").write_text("")
    with pytest.raises(DataError) as caught:
        Covidx(tmp_path)
    assert str(caught.value) == f"{tmp_path / 'test'}: missing image folder for test.txt"


@pytest.fixture(scope="module")
def qu_ex_records(shared_data):
    """(key, split, labels, image shape, mask shapes, mask value sets, mask non-empty) per real record."""
    adapter = CovidQuEx(shared_data / "cxr-covid-qu-ex")
    return [
        (
            r.key,
            r.split,
            r.labels,
            r.image.shape,
            {name: m.shape for name, m in r.masks.items()},
            {name: frozenset(np.unique(m).tolist()) for name, m in r.masks.items()},
            {name: bool(m.any()) for name, m in r.masks.items()},
        )
        for r in adapter.records()
    ]


@pytest.mark.shared_data
def test_real_qu_ex_counts_and_masks(qu_ex_records):
    counts = Counter((split, labels[0]) for _, split, labels, *_ in qu_ex_records)
    assert counts == {
        ("train", "COVID-19"): 600,
        ("train", "Non-COVID"): 300,
        ("train", "Normal"): 300,
        ("val", "COVID-19"): 200,
        ("val", "Non-COVID"): 100,
        ("val", "Normal"): 100,
    }
    for key, _, labels, shape, mask_shapes, values, non_empty in qu_ex_records:
        assert shape == (256, 256), key
        assert mask_shapes == {"lung": (256, 256), "infection": (256, 256)}, key
        assert values["lung"] == {0, 1}, key
        assert values["infection"] <= {0, 1}, key
        assert non_empty == {"lung": True, "infection": labels == ("COVID-19",)}, key
    keys = [key for key, *_ in qu_ex_records]
    assert keys == sorted(keys) and len(set(keys)) == 1600


@pytest.mark.shared_data
def test_real_ct_classification_labels_ids_and_sizes(shared_data):
    root = shared_data / "ct-covid-classification"
    with (root / "files.csv").open(newline="") as handle:
        table = {row["file"]: row for row in csv.DictReader(handle)}
    adapter = ImageFolder(root)
    records = [(r.key, r.labels, r.patient_id, r.source, r.image.shape) for r in adapter.records()]
    assert Counter(labels for _, labels, *_ in records) == {("COVID",): 600, ("NonCOVID",): 600}
    assert [key for key, *_ in records] == sorted(table)
    for key, labels, patient, source, shape in records:
        row = table[key]
        assert labels == (row["label"],) and source == row["source_group"], key
        if row["ucsd_patient_id"]:
            assert patient == f"ucsd:{row['ucsd_patient_id']}", key
        assert shape[:2] == (int(row["height"]), int(row["width"])), key
    ucsd = [patient for _, _, patient, *_ in records if patient and patient.startswith("ucsd:")]
    assert (len(ucsd), len(set(ucsd))) == (203, 159)
    nor = {patient for key, _, patient, *_ in records if "/nor_" in key}
    assert nor == {f"group:NonCOVID/nor_{k}" for k in {key.split("_")[1] for key in table if "/nor_" in key}}
    assert sum(1 for *_, source, _ in records if source == "sars-cov-2-ct-scan") == 635
