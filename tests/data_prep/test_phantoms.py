import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from data_prep import phantoms
from data_prep.adapters.covid_qu_ex import CovidQuEx
from data_prep.adapters.image_folder import ImageFolder
from data_prep.adapters.lidc import LidcNoduleSlices
from data_prep.adapters.medseg import MedSegCovidCt
from data_prep.adapters.zenodo import ZenodoCovidCtSeg
from data_prep.errors import DataError

SMALL = {"n_cases": 1, "size": 64, "slices": 16}


@pytest.fixture(scope="module")
def phantom_root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("phantoms")
    phantoms.generate(out, seed=0, **SMALL)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _truth(root: Path) -> dict:
    return json.loads((root / phantoms.TRUTH_FILE).read_text())


def test_generate_is_byte_identical_for_the_same_seed(phantom_root, tmp_path):
    phantoms.generate(tmp_path, seed=0, **SMALL)
    assert _files(tmp_path) == _files(phantom_root)


def test_generate_differs_for_another_seed(phantom_root, tmp_path):
    phantoms.generate(tmp_path, kinds=("zenodo", "covid_qu_ex"), seed=1, **SMALL)
    first, second = _files(phantom_root / "zenodo"), _files(tmp_path / "zenodo")
    assert first.keys() == second.keys()
    ct = "COVID-19-CT-Seg_20cases/phantom_001.nii.gz"
    assert first[ct] != second[ct]
    xray = "Infection Segmentation Data/Train/COVID-19/images/phantom_covid19_001.png"
    assert (phantom_root / "covid_qu_ex" / xray).read_bytes() != (
        tmp_path / "covid_qu_ex" / xray
    ).read_bytes()


def test_every_root_is_labelled_synthetic_and_nothing_temporary_is_left(phantom_root):
    assert sorted(p.name for p in phantom_root.iterdir()) == sorted(phantoms.KINDS)
    for kind in phantoms.KINDS:
        root = phantom_root / kind
        assert phantoms.is_synthetic(root)
        assert "SYNTHETIC PHANTOM" in (root / phantoms.MARKER_FILE).read_text()
        assert (root / "README.md").read_text().startswith(f"# SYNTHETIC PHANTOM: {kind}")
        truth = _truth(root)
        assert truth["synthetic"] is True and truth["kind"] == kind


def test_generate_refuses_to_overwrite_unless_asked(phantom_root, tmp_path):
    phantoms.generate(tmp_path, kinds=("lidc",), **SMALL)
    with pytest.raises(DataError, match=f"{tmp_path / 'lidc'}: already exists; remove it or pass overwrite"):
        phantoms.generate(tmp_path, kinds=("lidc",), **SMALL)
    phantoms.generate(tmp_path, kinds=("lidc",), overwrite=True, **SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lidc"]


def _effusion_case() -> phantoms.CTPhantom:
    """The first default-size phantom case that has a pleural effusion."""
    for case in range(10):
        phantom = phantoms.ct_volume(seed=0, case=case)
        if phantom.truth["lesion_ml"]["effusion"] > 0 and phantom.truth["lesion_ml"]["consolidation"] > 0:
            return phantom
    raise AssertionError("no case with effusion and consolidation among the first 10")


@pytest.fixture(scope="module")
def ct() -> phantoms.CTPhantom:
    return _effusion_case()


def test_ct_volume_shape_dtype_and_affine(ct):
    assert ct.hu.shape == ct.lung.shape == ct.labels.shape == (128, 128, 32)
    assert ct.hu.dtype == np.int16 and ct.lung.dtype == ct.labels.dtype == np.uint8
    np.testing.assert_allclose(np.diag(ct.affine), [2.8125, 2.8125, 9.375, 1.0])  # 360 mm / 128, 300 mm / 32
    assert set(np.unique(ct.lung)) == {0, 1, 2}
    assert set(np.unique(ct.labels)) == {0, 1, 2, 3}


def test_ct_volume_tissue_hu(ct):
    def median(mask: np.ndarray) -> float:
        return float(np.median(ct.hu[mask]))

    def interior(mask: np.ndarray) -> np.ndarray:
        """The voxels whose in-plane 3 x 3 neighbourhood is inside `mask` (no partial-volume edge)."""
        return ndimage.binary_erosion(mask, structure=np.ones((3, 3, 1), bool))

    corner = np.zeros(ct.hu.shape, bool)
    corner[:4, :4, :] = True
    assert abs(median(corner) - phantoms.HU["air"]) < 15
    assert abs(median(interior((ct.lung > 0) & (ct.labels == 0))) - phantoms.HU["lung"]) < 15
    assert abs(median(interior(ct.labels == 2)) - phantoms.HU["consolidation"]) < 30
    assert abs(median(interior(ct.labels == 3)) - phantoms.HU["effusion"]) < 30
    # GGO has blurred edges, so its median lies a little below the GGO value
    assert -600 < median(interior(ct.labels == 1)) < -400
    # the mediastinum at mid height: soft tissue (display row 0.52, column 0.5 -> RAS x = y = 63)
    assert abs(float(ct.hu[63, 63, 16]) - phantoms.HU["soft_tissue"]) < 60


def test_ct_lesions_inside_lungs_and_effusion_outside(ct):
    assert np.all(ct.lung[(ct.labels == 1) | (ct.labels == 2)] > 0)
    effusion = ct.labels == 3
    assert not np.any(ct.lung[effusion])
    x, y, z = np.nonzero(effusion)
    # posterior (RAS: low y, below the lung centre at about 0.49 * 128) and at the bases (lower 40 %)
    assert y.max() < 0.5 * 128 and z.max() < 0.4 * 32


def test_ct_left_lung_is_on_the_patient_left(ct):
    # RAS+: x grows towards the patient's right, so the left lung (1) has the smaller x
    left_x = np.nonzero(ct.lung == phantoms.LEFT_LUNG)[0].mean()
    right_x = np.nonzero(ct.lung == phantoms.RIGHT_LUNG)[0].mean()
    assert left_x < 64 < right_x


def test_ct_truth_volumes_match_masks(ct):
    voxel_ml = 2.8125 * 2.8125 * 9.375 / 1000
    for name, value in phantoms.LABEL_VALUES.items():
        assert ct.truth["lesion_ml"][name] == pytest.approx((ct.labels == value).sum() * voxel_ml, abs=1e-3)


def test_nodule_volume_has_solid_nodules_inside_lungs():
    phantom = phantoms.nodule_volume(seed=0, size=128, slices=128)
    assert 1 <= phantom.labels.max() <= 2 and len(phantom.truth["nodules"]) == phantom.labels.max()
    assert np.all(phantom.lung[phantom.labels > 0] > 0)
    voxel_ml = np.prod(phantom.spacing_mm) / 1000
    for number, nodule in enumerate(phantom.truth["nodules"], start=1):
        x, y, z = nodule["centre_xyz"]
        assert phantom.labels[x, y, z] == number
        assert abs(int(phantom.hu[x, y, z]) - phantoms.HU["nodule"]) < 50  # the centre: no partial volume
        assert 5.0 <= nodule["radius_mm"] <= 12.0
        assert nodule["ml"] == pytest.approx((phantom.labels == number).sum() * voxel_ml, abs=1e-3)


@pytest.mark.parametrize("label", phantoms.XRAY_CLASSES)
def test_chest_xray_masks_and_label(label):
    xray = phantoms.chest_xray(seed=0, label=label, size=128)
    assert xray.image.shape == xray.lung.shape == xray.infection.shape == (128, 128)
    assert xray.image.dtype == np.uint8 and xray.label == label
    assert set(np.unique(xray.lung)) == {0, 1}
    # lungs darker than the soft tissue around them, as on a radiograph
    body_row = xray.image[64, :]
    assert xray.image[xray.lung > 0].mean() < 120 < np.median(body_row[xray.lung[64] == 0][20:-20])
    if label == "COVID-19":
        assert xray.infection.any() and np.all(xray.lung[xray.infection > 0])
    else:
        assert not xray.infection.any()


def test_chest_xray_opacities_raise_lung_brightness():
    normal = phantoms.chest_xray(seed=0, label="Normal", size=128)
    covid = phantoms.chest_xray(seed=0, label="COVID-19", size=128)
    inside = covid.infection > 0
    assert covid.image[inside].mean() > normal.image[inside].mean() + 20


def test_zenodo_phantom_read_by_the_real_adapter(phantom_root):
    root = phantom_root / "zenodo"
    adapter = ZenodoCovidCtSeg(root)
    assert adapter.layout == "published"
    [volume] = list(adapter.volumes())
    truth = _truth(root)["cases"]["phantom_001"]
    assert volume.key == "phantom_001" and volume.intensity == "hu" and volume.image.shape == (64, 64, 16)
    assert volume.spacing_mm == pytest.approx((5.625, 5.625, 18.75))
    infection_ml = volume.masks["infection"].sum() * np.prod(volume.spacing_mm) / 1000
    assert infection_ml == pytest.approx(truth["infection_ml"], abs=1e-3)
    records = list(adapter.records())
    assert len(records) == 16
    assert sum("infection" in r.labels for r in records) == int(
        volume.masks["infection"].any(axis=(0, 1)).sum()
    )
    lung = np.asanyarray(nib.load(root / "Lung_and_Infection_Mask" / "phantom_001.nii.gz").dataobj)
    assert set(np.unique(lung)) == {0, 1, 2, 3}


def test_medseg_phantom_read_by_the_real_adapter(phantom_root):
    root = phantom_root / "medseg"
    truth = _truth(root)["cases"]
    adapter = MedSegCovidCt(root)
    assert adapter.layout == "medseg" and adapter.splits() == ("train", "unlabelled")
    train = list(adapter.records("train"))
    assert [r.key for r in adapter.records()] == [r.key for r in train]  # unlabelled only by name
    test = list(adapter.records("unlabelled"))
    tr = [r for r in train if r.key.startswith("tr/")]
    rp = [r for r in train if r.key.startswith("rp_1/")]
    assert len(tr) == len(truth["tr_slices"]) and len(rp) == 16
    assert len(test) == len(truth["val_slices"]) and all(not r.masks for r in test)
    assert all(r.labels for r in tr)  # tr slices are picked among the lesion slices
    [volume] = list(adapter.volumes())
    effusion_ml = volume.masks["effusion"].sum() * np.prod(volume.spacing_mm) / 1000
    assert effusion_ml == pytest.approx(truth["rp"]["1"]["lesion_ml"]["effusion"], abs=1e-3)
    assert np.all(volume.masks["lung"][volume.masks["ggo"] > 0])


def test_covid_qu_ex_phantom_read_by_the_real_adapter(phantom_root):
    adapter = CovidQuEx(phantom_root / "covid_qu_ex")
    assert sorted(adapter.splits()) == ["test", "train", "val"]
    records = list(adapter.records())
    counts = {}
    for record in records:
        counts[(record.split, record.labels)] = counts.get((record.split, record.labels), 0) + 1
        assert record.masks["infection"].any() == (record.labels == ("COVID-19",))
    assert counts == {
        (split, (label,)): n
        for split, n in (("train", 2), ("val", 1), ("test", 1))
        for label in phantoms.XRAY_CLASSES
    }


def test_lidc_phantom_read_by_the_real_adapter(phantom_root):
    root = phantom_root / "lidc"
    nodules = _truth(root)["cases"]["LIDC-IDRI-9001"]["nodules"]
    records = list(LidcNoduleSlices(root).records())
    meta_rows = (root / "meta_info_subset.csv").read_text().splitlines()[1:]
    assert len(records) == len(meta_rows) > 0
    assert {r.patient_id for r in records} == {"LIDC-IDRI-9001"}
    assert {r.labels for r in records} == {(f"malignancy_{n['malignancy']}",) for n in nodules if n["ml"] > 0}
    peaks = {}
    for record in records:
        assert record.masks["nodule"].any()
        assert record.image[0, 0] == 0.0  # outside the lungs
        nodule = record.key.split("_NI")[1][:3]
        peaks[nodule] = max(peaks.get(nodule, -1.0), float(record.image[record.masks["nodule"] > 0].max()))
    # (HU + 850) / 300 inside the lungs: a 50 HU nodule peaks near 3 on its central slice
    assert peaks == {f"{i:03d}": pytest.approx((50 + 850) / 300, abs=0.3) for i in range(len(peaks))}


@pytest.mark.parametrize(
    "kind, adapter",
    [
        ("zenodo", ZenodoCovidCtSeg),
        ("medseg", MedSegCovidCt),
        ("lidc", LidcNoduleSlices),
        ("covid_qu_ex", CovidQuEx),
        ("image_folder", ImageFolder),
    ],
)
def test_phantom_records_are_marked_synthetic(phantom_root, kind, adapter):
    # the adapters set Record.synthetic from the SYNTHETIC.txt marker (phantoms.is_synthetic)
    assert all(record.synthetic for record in adapter(phantom_root / kind).records())


def test_image_folder_phantoms_split_classes_by_lesion_presence(phantom_root):
    records = list(ImageFolder(phantom_root / "image_folder").records())
    truth = json.loads((phantom_root / "image_folder" / phantoms.TRUTH_FILE).read_text())["cases"]
    assert {r.labels[0] for r in records} == {"COVID", "NonCOVID"}
    for record in records:
        case = record.key.split("/")[1][len("phantom_") : len("phantom_") + 3]
        assert truth[f"case_{case}"]["label"] == record.labels[0]
        assert record.patient_id.endswith(f":{int(case)}")
        assert record.image.dtype == np.uint8
    # every phantom volume is one patient, and its slices share one class
    by_patient = {}
    for record in records:
        by_patient.setdefault(record.patient_id, set()).add(record.labels[0])
    assert all(len(labels) == 1 for labels in by_patient.values())
