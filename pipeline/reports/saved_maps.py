"""Low-resolution maps saved for later re-scoring (``cam.save_maps=true`` -> ``maps.parquet``).

A new score can then be computed on an old run without the model: :func:`rescore` reads the maps and
the boxes back, post-processes them exactly as the run did and applies any score function. The maps are
the method's signed maps at the target layer's resolution (``[K, h, w]`` per image, float16: 2 bytes per
value, about 200 bytes per map for a 7x7 layer), the boxes are in network-input coordinates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline.data.batch import Batch

MAPS_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("map_names", pa.list_(pa.string())),  # e.g. [pred, true]: the order of the K maps
        ("map_shape", pa.list_(pa.int32())),  # [K, h, w]
        ("maps", pa.list_(pa.float16())),  # K * h * w values, row-major
        ("boxes", pa.list_(pa.float32())),  # N * 4 values (x1, y1, x2, y2), network-input pixel edges
    ]
)


def map_rows(ids: pa.Array, signed_low_res: torch.Tensor, batch: Batch, map_names: list[str]) -> pa.Table:
    """Rows of ``maps.parquet`` for one batch: one small copy of the low-resolution maps to the host."""
    maps = signed_low_res.to(torch.float16).cpu().numpy()  # [B, K, h, w]
    count = maps.shape[0]
    boxes = [batch.boxes.coords[i][batch.boxes.valid[i]].reshape(-1).numpy() for i in range(count)]
    return pa.table(
        {
            "id": ids,
            "map_names": [list(map_names)] * count,
            "map_shape": [list(maps.shape[1:])] * count,
            "maps": pa.FixedSizeListArray.from_arrays(pa.array(maps.reshape(-1)), int(np.prod(maps.shape[1:]))).cast(
                pa.list_(pa.float16())
            ),
            "boxes": pa.array(boxes, pa.list_(pa.float32())),
        },
        schema=MAPS_SCHEMA,
    )


def read_saved_maps(
    path: Path, batch_size: int = 256
) -> Iterator[tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(ids, signed maps [B, K, h, w] float32, boxes [B, N, 4], box_valid [B, N])`` batches."""
    for record_batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size):
        rows = record_batch.to_pydict()
        shape = rows["map_shape"][0]
        maps = torch.tensor(np.asarray(rows["maps"], dtype=np.float32).reshape(-1, *shape))
        n_max = max([len(b) // 4 for b in rows["boxes"]] + [1])
        boxes = torch.zeros(len(rows["id"]), n_max, 4)
        valid = torch.zeros(len(rows["id"]), n_max, dtype=torch.bool)
        for i, flat in enumerate(rows["boxes"]):
            count = len(flat) // 4
            boxes[i, :count] = torch.tensor(flat, dtype=torch.float32).view(count, 4)
            valid[i, :count] = True
        yield rows["id"], maps, boxes, valid


def rescore(
    run_dir: Path, input_size: tuple[int, int], score: Callable[..., dict[str, torch.Tensor]], map_index: int = 1
) -> dict[str, np.ndarray]:
    """Apply ``score(maps, raw_maps, empty, boxes, box_valid) -> {name: [B]}`` to saved map ``map_index``
    (1 = the true class) of every image, post-processed as in the run. Returns ``{"id": ..., name: ...}``."""
    from pipeline.maps.engine import upsample_and_normalise

    out: dict[str, list] = {"id": []}
    for ids, maps, boxes, valid in read_saved_maps(Path(run_dir) / "maps.parquet"):
        up = upsample_and_normalise(maps, input_size)
        values = score(up.normalised[:, map_index], up.raw[:, map_index], up.empty[:, map_index], boxes, valid)
        out["id"].extend(ids)
        for name, tensor in values.items():
            out.setdefault(name, []).extend(tensor.tolist())
    return {name: np.asarray(values) for name, values in out.items()}
