"""The strategy clustering (pipeline/reports/strategies.py) on planted maps: the grids made on the device,
two known strategies against one, determinism, the cap on the graph's size, what is left unclustered."""

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.jsonio import dumps_strict
from pipeline.reports.strategies import (
    MAP_GRID_COLUMN,
    STRATEGY_COLUMN,
    StrategySettings,
    eigengap_count,
    find_strategies,
    map_grid,
    object_map_grid,
    strategy_lines,
    write_strategy_pictures,
)

G = 16


def pattern(row: float, col: float, spread: float = 1.5) -> np.ndarray:
    """A blob of energy centred on cell (row, col) of the G x G grid. ``[G * G]``."""
    rows, cols = np.mgrid[0:G, 0:G]
    return np.exp(-((rows - row) ** 2 + (cols - col) ** 2) / (2 * spread**2)).ravel()


def planted_rows(rng, name: str, counts_and_patterns, start: int = 0, noise: float = 0.2) -> pd.DataFrame:
    """Rows of one predicted class: for each ``(count, pattern, off_object)`` that many maps of ``pattern``
    plus noise; ``off_object`` sets their pointing game to a miss. Column ``strategy`` is the planted truth."""
    frames, k = [], start
    for truth, (count, blob, off_object) in enumerate(counts_and_patterns):
        grids = np.clip(blob[None] + rng.normal(0, noise, (count, G * G)), 0, None).astype(np.float32)
        frames.append(
            pd.DataFrame(
                {
                    "id": [f"{name}_{k + i:05d}" for i in range(count)],
                    "pred_name": name,
                    "label_name": name,
                    "correct": not off_object,
                    "pred_pointing_hit": pd.array([not off_object] * count, dtype="boolean"),
                    "pred_excess_energy": 0.0 if off_object else 0.5,
                    "marker_present": int(off_object),
                    MAP_GRID_COLUMN: list(grids),
                    "strategy": truth,
                }
            )
        )
        k += count
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def planted():
    """Class ``two``: 160 maps on the object (centre) and 40 on a corner that peak off the object; class
    ``one``: 200 maps of the centre blob only."""
    rng = np.random.default_rng(0)
    centre, corner = pattern(8, 8), pattern(3, 12)
    return pd.concat(
        [
            planted_rows(rng, "two", [(160, centre, False), (40, corner, True)]),
            planted_rows(rng, "one", [(200, centre, False)]),
        ],
        ignore_index=True,
    )


def test_map_grid_is_the_mean_of_each_cell():
    maps = torch.zeros(1, 32, 32)
    maps[0, 0:4, 0:4] = 1.0  # exactly cell (0, 0) of an 8 x 8 grid (4 px cells)
    maps[0, 8:10, 12:16] = 1.0  # half of cell (2, 3)
    grid = map_grid(maps, 8).view(8, 8)
    assert grid[0, 0] == pytest.approx(1.0) and grid[2, 3] == pytest.approx(0.5)
    assert grid.sum() == pytest.approx(1.5)


def test_object_grid_is_the_same_wherever_the_object_is():
    """The same map relative to its box, at two places of the input, gives the same object-centred grid;
    the map is then at the window's centre; an image without a box gets zeros."""
    maps = torch.zeros(3, 64, 64)
    maps[0, 10:20, 10:20] = 1.0
    maps[0, 12:16, 40:44] = 0.5  # a second spot 30 px right of the object
    maps[1, 30:40, 20:30] = 1.0
    maps[1, 32:36, 50:54] = 0.5
    maps[2, 30:40, 20:30] = 1.0
    boxes = torch.tensor([[[10.0, 10, 20, 20]], [[20.0, 30, 30, 40]], [[0.0, 0, 0, 0]]])
    valid = torch.tensor([[True], [True], [False]])
    grids = object_map_grid(maps, boxes, valid, G)
    torch.testing.assert_close(grids[0], grids[1])
    window = grids[0].view(G, G)
    peak = np.unravel_index(int(window.argmax()), (G, G))
    assert abs(peak[0] - (G / 2 - 0.5)) <= 0.5 and abs(peak[1] - (G / 2 - 0.5)) <= 0.5  # the object at the centre
    assert window[:, G // 2 + 2 :].sum() > 0  # the second spot to the right of the centre
    assert float(grids[2].abs().sum()) == 0.0


def test_eigengap_picks_the_largest_gap_within_the_bounds():
    assert eigengap_count(np.array([0.0, 0.01, 0.5, 0.55]), 8) == 2  # two loosely linked parts
    assert eigengap_count(np.array([0.0, 0.4, 0.45, 0.5]), 8) == 1  # one part that holds together
    assert eigengap_count(np.array([0.0, 0.0, 0.0, 0.0, 0.9]), 2) == 1  # the gap at 4 is past max_clusters = 2
    assert eigengap_count(np.array([0.0]), 8) == 1


def test_two_planted_strategies_two_clusters_and_one_strategy_one(planted):
    section, ids = find_strategies(planted, StrategySettings(), ["marker_present"])
    frame = planted.assign(found=ids)
    two = frame[frame["pred_name"] == "two"]
    assert set(two["found"]) == {0, 1}
    # cluster 0 is the largest (the 160 on the object); the 40 corner maps are cluster 1, all of them
    assert (two.loc[two["strategy"] == 1, "found"] == 1).all() and (two.loc[two["strategy"] == 0, "found"] == 0).all()
    one = frame[frame["pred_name"] == "one"]
    assert set(one["found"]) == {0}
    entries = {e["name"]: e for e in section["classes"]}
    assert [c["images"] for c in entries["two"]["clusters"]] == [160, 40] and len(entries["one"]["clusters"]) == 1
    off = entries["two"]["clusters"][1]
    assert off["off_object_peak_share"] == 1.0 and off["accuracy"] == 0.0 and off["looks_off_object"]
    assert off["groups"]["marker_present"] == {"1": 1.0} and off["difference"] > 0.5
    assert not entries["two"]["clusters"][0]["looks_off_object"]
    assert section["several"] == ["two"]
    [suspect] = section["suspects"]
    assert suspect["name"] == "two" and suspect["clusters"] == [1] and suspect["images"] == 40
    assert suspect["largest_off_object_peak_share"] == 0.0
    assert set(off["examples"]) <= set(two.loc[two["strategy"] == 1, "id"])


def test_same_seed_same_clusters_whatever_the_row_order(planted):
    """Also the seeded sample of a class over the cap (150 of 200 maps) is the same: rows are taken in id order."""
    settings = StrategySettings(seed=3, max_images=150)
    first, first_ids = find_strategies(planted, settings)
    shuffled = planted.sample(frac=1.0, random_state=1)
    second, second_ids = find_strategies(shuffled, settings)
    by_id = dict(zip(shuffled["id"], second_ids))
    assert [by_id[i] for i in planted["id"]] == list(first_ids)
    for a, b in zip(first["classes"], second["classes"]):
        assert a["eigenvalues"] == b["eigenvalues"]
        assert [c["examples"] for c in a["clusters"]] == [c["examples"] for c in b["clusters"]]


def test_a_class_over_the_cap_is_clustered_on_a_sample_and_every_row_gets_a_cluster():
    rng = np.random.default_rng(5)
    frame = planted_rows(rng, "big", [(560, pattern(8, 8), False), (140, pattern(12, 3), True)])
    section, ids = find_strategies(frame, StrategySettings(max_images=200))
    [entry] = section["classes"]
    assert entry["images"] == 700 and entry["sampled"] == 200
    assert ids.notna().all() and set(ids) == {0, 1}
    # the rows outside the sample went to the nearest centre: the planted split holds for all 700
    assert (ids[frame["strategy"] == 1] == 1).mean() >= 0.99 and (ids[frame["strategy"] == 0] == 0).mean() >= 0.99
    assert [c["images"] for c in entry["clusters"]] == [int((ids == 0).sum()), int((ids == 1).sum())]


def test_small_classes_and_unusable_maps_get_no_cluster(planted):
    rng = np.random.default_rng(2)
    small = planted_rows(rng, "small", [(12, pattern(8, 8), False)])
    frame = pd.concat([planted, small], ignore_index=True)
    frame.loc[0, MAP_GRID_COLUMN] = np.zeros(G * G, np.float32)  # an empty map
    frame.loc[1, MAP_GRID_COLUMN] = None  # a non-finite row: no grid
    section, ids = find_strategies(frame, StrategySettings(min_images=20))
    assert ids[frame["pred_name"] == "small"].isna().all()
    assert ids.iloc[:2].isna().all() and ids.iloc[2:400].notna().all()
    assert section["not_clustered"] == [{"name": "small", "images": 12}]
    assert "small" not in {e["name"] for e in section["classes"]}
    lines = strategy_lines(section)
    assert "1 classes under 20 maps not clustered" in lines[0]


def test_by_true_class_groups_by_the_label(planted):
    frame = planted.copy()
    frame.loc[frame["strategy"] == 1, "label_name"] = "one"  # the corner maps' images are of class "one"
    section, ids = find_strategies(frame, StrategySettings(by="true"))
    entries = {e["name"]: e for e in section["classes"]}
    assert entries["two"]["images"] == 160 and entries["one"]["images"] == 240
    assert [c["images"] for c in entries["one"]["clusters"]] == [200, 40]


def test_without_the_grid_column_nothing_is_clustered(planted):
    section, ids = find_strategies(planted.drop(columns=[MAP_GRID_COLUMN]), StrategySettings())
    assert ids.isna().all() and section["classes"] == []


def test_pictures_and_summary_lines(planted, tmp_path):
    section, _ = find_strategies(planted, StrategySettings(), ["marker_present"])
    write_strategy_pictures(section, tmp_path / "strategies")
    entry = {e["name"]: e for e in section["classes"]}["two"]
    assert entry["picture"] == f"strategies/{(tmp_path / entry['picture']).name}"
    assert (tmp_path / entry["picture"]).stat().st_size > 1000
    assert "picture" not in {e["name"]: e for e in section["classes"]}["one"]  # one cluster: nothing to compare
    assert all("mean_map" not in c for e in section["classes"] for c in e["clusters"])
    dumps_strict(section)  # summary.json holds it as strict JSON
    lines = strategy_lines(section)
    assert lines[0] == "  strategies: 1 of the 2 predicted classes clustered have several clusters of maps (two 2)"
    assert "strategy suspect: predicted 'two': 1 of its 2 clusters (40 images, 20%) look off the object" in lines[1]
    assert "100% of their maps peak off every box against 0% in its largest cluster" in lines[1]
    assert "marker_present=1 on 100% of them (0% in the largest)" in lines[1]
    assert strategy_lines(find_strategies(planted, StrategySettings(grid=0))[0]) == []


def test_column_name_is_what_finalize_writes():
    assert STRATEGY_COLUMN == "pred_strategy" and MAP_GRID_COLUMN == "pred_map_grid"


def test_backdrop_centres_each_image_on_its_object(tmp_path):
    """The pictures' backdrop: each image placed as the run placed it, shifted so that its boxes' centre is the
    centre of the window twice the input (the map grid's frame); where no image reaches, grey."""
    from PIL import Image

    from pipeline.data.dataset import PreprocessSpec
    from pipeline.data.records import SampleRecord
    from pipeline.reports.strategies import object_centred_mean_input

    records = []
    for number, (x, y) in enumerate([(4, 4), (20, 12)]):  # a white 8 x 8 object at two places of a black 32 x 32
        pixels = np.zeros((32, 32, 3), np.uint8)
        pixels[y : y + 8, x : x + 8] = 255
        path = tmp_path / f"image{number}.png"
        Image.fromarray(pixels).save(path)
        records.append(SampleRecord(f"i{number}", str(path), 0, np.array([[x, y, x + 8, y + 8]], np.float32)))
    spec = PreprocessSpec(mode="resize", size=32, resize_size=None)
    mean = object_centred_mean_input(records, spec)
    assert mean.shape == (64, 64, 3)
    assert (mean[28:36, 28:36] == 255).all()  # both objects on the centre
    assert mean[30:34, 36:40].max() == 0  # beside it, black in both images
    assert (mean[0, 63] == 128).all()  # the window's corner: no image reaches it
