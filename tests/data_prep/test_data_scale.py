"""The data scale a run records comes from the adapter (and its record count), never from the path."""

from __future__ import annotations

import pytest

from data_prep.adapters import open_dataset
from data_prep.adapters.covid_qu_ex import CovidQuEx
from data_prep.adapters.image_folder import ImageFolder
from data_prep.adapters.medseg import MedSegCovidCt
from data_prep.adapters.zenodo import ZenodoCovidCtSeg
from tests.data_prep.test_adapters_ct import medseg_download, zenodo_download
from tests.data_prep.test_adapters_xray import _cvt_layout, _files_csv, _image, _png, qu_ex_root  # noqa: F401


def test_image_folder_is_a_subset_only_where_files_csv_names_the_pool(tmp_path):
    root = tmp_path / "shared" / "data" / "ct"  # a path that says "shared" decides nothing
    _cvt_layout(root)
    assert ImageFolder(root).data_scale() == "unknown"  # files.csv without `original_file`
    pooled = tmp_path / "pooled"
    _png(pooled / "COVID" / "a.jpg", _image(9), ".jpg")
    (pooled / "files.csv").write_text(
        "file,label,source_group,ucsd_patient_id,original_file\nCOVID/a.jpg,COVID,mosmeddata,,a.png\n"
    )
    assert ImageFolder(pooled).data_scale() == "subset"


def test_qu_ex_compares_the_record_count_with_the_parts_release(qu_ex_root):  # noqa: F811
    adapter = CovidQuEx(qu_ex_root)  # 4 images of the Infection part's 5,826
    assert adapter.release_records == 5_826 and adapter.data_scale() == "subset"
    assert CovidQuEx(qu_ex_root, part="lung").release_records == 33_920
    adapter.release_records = 4
    assert adapter.data_scale() == "full"  # counted from records()
    assert adapter.data_scale(n_records=3) == "subset"  # a manifest's count, where the caller has one


def test_zenodo_scale_by_layout(tmp_path):
    zenodo_download(tmp_path)  # the published layout with 2 of the release's 20 cases
    assert ZenodoCovidCtSeg(tmp_path).data_scale() == "subset"
    (tmp_path / "SYNTHETIC.txt").write_text("SYNTHETIC PHANTOM\n")
    assert ZenodoCovidCtSeg(tmp_path).data_scale() == "synthetic"


def test_medseg_counts_records_against_the_100_slices(tmp_path):
    medseg_download(tmp_path)
    adapter = MedSegCovidCt(tmp_path)
    count = sum(1 for _ in adapter.records())
    assert count < 100 and adapter.data_scale() == "subset"
    assert adapter.data_scale(n_records=100) == "full"


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("dataset", "folder", "scale"),
    [
        ("medseg", "ct-infection-medseg", "subset"),  # Inf-Net's 98 of MedSeg's 100 slices
        ("zenodo", "ct-lung-infection-zenodo", "subset"),  # the re-stacked layout
        ("covid_qu_ex", "cxr-covid-qu-ex", "subset"),  # 1,600 of 5,826
        ("image_folder", "ct-covid-classification", "subset"),  # files.csv names the pool files
        ("lidc", "nodule-lidc", "subset"),  # meta_info_subset.csv
        ("msd_patches", "tumour-msd-patches", "unknown"),
    ],
)
def test_shared_subsets_scale(shared_data, dataset, folder, scale):
    assert open_dataset(dataset, shared_data / folder).data_scale() == scale
