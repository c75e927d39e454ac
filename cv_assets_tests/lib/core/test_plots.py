import ast
import base64
import io
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cv_assets.lib.core.plots import (
    MAX_PNG_BYTES,
    confusion_matrix_png,
    markdown_image,
    png_data_uri,
    pr_curve_png,
    prediction_grid_png,
)

pytestmark = pytest.mark.unit
CLASSES = ["car", "person", "bike"]
GREY = (110, 110, 110)


def decode(png: bytes) -> Image.Image:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG"
    img.load()
    return img.convert("RGB")


def pr_inputs(n: int = 3) -> tuple[np.ndarray, np.ndarray, list[float]]:
    recall = np.linspace(0.0, 1.0, 101)
    precision = np.stack([np.clip(1.0 - recall ** (2 + i), 0.0, 1.0) for i in range(n)])
    aps = [float(np.trapezoid(p, recall)) for p in precision]
    return recall, precision, aps


def write_jpeg(path: Path, kind: str = "gradient", size: tuple[int, int] = (160, 120)) -> Path:
    w, h = size
    if kind == "gradient":
        x = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
        y = np.linspace(0, 255, h, dtype=np.float32)[:, None, None]
        arr = np.broadcast_to((x + y) / 2, (h, w, 3)).astype(np.uint8)
    elif kind == "noise":
        arr = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    else:
        arr = np.full((h, w, 3), GREY, dtype=np.uint8)
    Image.fromarray(arr).save(path, format="JPEG", quality=90)
    return path


def pixel(img: Image.Image, x: int, y: int) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in np.asarray(img.convert("RGB"))[y, x])
    return (r, g, b)


def colours(img: Image.Image) -> int:
    return len(np.unique(np.asarray(img.convert("RGB")).reshape(-1, 3), axis=0))


def is_green(px: tuple[int, int, int]) -> bool:
    r, g, b = px
    return g > 170 and r < 90 and b < 90


def test_pr_curve_with_three_classes_is_a_small_valid_png() -> None:
    recall, precision, aps = pr_inputs(3)
    png = pr_curve_png(recall, precision, aps, CLASSES)
    img = decode(png)
    assert 300 <= img.width <= 700 and 250 <= img.height <= 600
    assert len(png) < MAX_PNG_BYTES
    assert colours(img) > 10  # lines and text were drawn, not a blank canvas


def test_pr_curve_tolerates_a_class_with_no_ground_truth() -> None:
    recall, precision, aps = pr_inputs(3)
    precision[1] = np.nan
    aps[1] = float("nan")
    assert colours(decode(pr_curve_png(recall, precision, aps, CLASSES))) > 10


def test_pr_curve_rejects_mismatched_shapes() -> None:
    recall, precision, aps = pr_inputs(3)
    with pytest.raises(ValueError, match="precision_by_class"):
        pr_curve_png(recall, precision[:2], aps, CLASSES)
    with pytest.raises(ValueError, match="ap50_by_class"):
        pr_curve_png(recall, precision, aps[:2], CLASSES)


def test_confusion_matrix_with_counts_is_a_small_valid_png() -> None:
    matrix = np.array([[50, 2, 0, 7], [3, 40, 1, 4], [0, 5, 30, 2], [6, 3, 9, 0]])
    png = confusion_matrix_png(matrix, CLASSES)
    img = decode(png)
    assert 300 <= img.width <= 700 and 250 <= img.height <= 600
    assert len(png) < MAX_PNG_BYTES
    assert colours(img) > 10


def test_confusion_matrix_with_an_empty_column_does_not_divide_by_zero() -> None:
    matrix = np.zeros((4, 4))
    matrix[0, 0] = 5
    assert decode(confusion_matrix_png(matrix, CLASSES)).width > 0


def test_confusion_matrix_rejects_a_matrix_without_the_background_row_and_column() -> None:
    with pytest.raises(ValueError, match="expected"):
        confusion_matrix_png(np.ones((3, 3)), CLASSES)


def test_prediction_grid_of_four_samples_has_a_cols_by_rows_tile_layout(tmp_path: Path) -> None:
    samples = []
    for i in range(4):
        path = write_jpeg(tmp_path / f"img{i}.jpg")
        gt = np.array([[i % 3, 0.1, 0.1, 0.6, 0.7]])
        pred = np.array([[0.12, 0.1, 0.62, 0.68, 0.87, i % 3], [0.5, 0.5, 0.9, 0.9, 0.4, 1]])
        samples.append((path, gt, pred))
    png = prediction_grid_png(samples, CLASSES, cols=3, tile=128)
    img = decode(png)
    assert img.size == (3 * 128, 2 * 128)
    assert len(png) < MAX_PNG_BYTES


def test_prediction_grid_draws_a_green_ground_truth_box_on_the_image(tmp_path: Path) -> None:
    path = write_jpeg(tmp_path / "flat.jpg", kind="flat")
    gt = np.array([[0, 0.25, 0.25, 0.75, 0.75]])
    pred = np.array([[0.05, 0.05, 0.2, 0.2, 0.9, 1]])  # away from the GT box
    img = decode(prediction_grid_png([(path, gt, pred)], CLASSES, cols=1, tile=200))
    assert img.size == (200, 200)
    assert is_green(pixel(img, 50, 100))  # left edge of the GT box, halfway down
    assert is_green(pixel(img, 100, 150))  # bottom edge
    assert not is_green(pixel(img, 100, 100))  # inside the box the image is untouched
    inside_pred = pixel(img, 25, 25)
    assert max(abs(a - b) for a, b in zip(inside_pred, GREY, strict=True)) < 20
    edge = pixel(img, 10, 30)  # left edge of the prediction: its class colour, not grey
    assert max(abs(a - b) for a, b in zip(edge, GREY, strict=True)) > 60


def test_prediction_grid_hides_predictions_below_min_conf_by_default(tmp_path: Path) -> None:
    path = write_jpeg(tmp_path / "flat.jpg", kind="flat")
    pred = np.array([[0.25, 0.25, 0.75, 0.75, 0.1, 0]])
    none = np.zeros((0, 5))
    shown = decode(
        prediction_grid_png([(path, none, pred)], CLASSES, cols=1, tile=200, min_conf=0.05)
    )
    hidden = decode(prediction_grid_png([(path, none, pred)], CLASSES, cols=1, tile=200))
    assert pixel(shown, 50, 100) != pixel(hidden, 50, 100)


def test_prediction_grid_turns_a_missing_or_corrupt_image_into_a_tile(tmp_path: Path) -> None:
    good = write_jpeg(tmp_path / "good.jpg")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(good.read_bytes()[:200])
    box = np.array([[0, 0.1, 0.1, 0.5, 0.5]])
    samples = [
        (good, box, np.zeros((0, 6))),
        (tmp_path / "missing.jpg", box, np.zeros((0, 6))),
        (str(corrupt), box, np.zeros((0, 6))),
    ]
    img = decode(prediction_grid_png(samples, CLASSES, cols=3, tile=96))
    assert img.size == (3 * 96, 96)
    assert pixel(img, 96 + 2, 2) == (128, 128, 128)  # the grey "unreadable" tile
    assert pixel(img, 2 * 96 + 2, 2) == (128, 128, 128)


def test_prediction_grid_accepts_out_of_range_class_and_coordinates(tmp_path: Path) -> None:
    path = write_jpeg(tmp_path / "a.jpg")
    gt = np.array([0, -0.2, 0.3, 1.4, 0.2])  # one row as a 1-D array, corners swapped
    pred = np.array([[0.9, 0.9, 0.1, 0.1, 0.8, 17]])  # unknown class index 17
    assert decode(prediction_grid_png([(path, gt, pred)], CLASSES, tile=64)).size == (64, 64)


def test_prediction_grid_of_noisy_images_fits_the_budget_and_keeps_box_colours(
    tmp_path: Path,
) -> None:
    paths = [write_jpeg(tmp_path / f"n{i}.jpg", kind="noise", size=(224, 224)) for i in range(9)]
    gt = np.array([[0, 0.25, 0.25, 0.75, 0.75]])
    png = prediction_grid_png([(p, gt, np.zeros((0, 6))) for p in paths], CLASSES)
    assert len(png) < MAX_PNG_BYTES
    img = decode(png)
    size = img.width // 3
    assert img.size == (3 * size, 3 * size)
    assert is_green(pixel(img, round(0.25 * size), size // 2))  # GT drawn after the palette cut


def test_prediction_grid_shrinks_its_tiles_only_when_even_16_colours_are_too_heavy(
    tmp_path: Path,
) -> None:
    paths = [write_jpeg(tmp_path / f"n{i}.jpg", kind="noise", size=(128, 128)) for i in range(6)]
    gt = np.array([[0, 0.25, 0.25, 0.75, 0.75]])
    samples = [(p, gt, np.zeros((0, 6))) for p in paths]
    png = prediction_grid_png(samples, CLASSES, cols=3, tile=128, max_bytes=12_000)
    assert len(png) <= 12_000
    img = decode(png)
    size = img.width // 3
    assert size < 128
    assert img.size == (3 * size, 2 * size)  # re-laid with smaller tiles, proportions kept
    assert is_green(pixel(img, round(0.25 * size), size // 2))


def test_prediction_grid_of_photos_keeps_full_size_tiles_within_budget(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:240, 0:320]
    paths = []
    for i in range(6):
        smooth = np.stack([x * 255 / 320, y * 255 / 240, (x + y + 40 * i) % 255], axis=-1)
        arr = np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(tmp_path / f"p{i}.jpg", quality=85)
        paths.append(tmp_path / f"p{i}.jpg")
    gt = np.array([[0, 0.25, 0.25, 0.75, 0.75]])
    png = prediction_grid_png([(p, gt, np.zeros((0, 6))) for p in paths], CLASSES)
    assert len(png) < MAX_PNG_BYTES
    img = decode(png)
    assert img.size == (3 * 224, 2 * 224)
    assert is_green(pixel(img, 224 + 56, 224 + 112))  # GT left edge in the 5th tile


def test_prediction_grid_of_no_samples_is_a_small_png_saying_so() -> None:
    png = prediction_grid_png([], CLASSES)
    img = decode(png)
    assert 0 < img.width <= 400 and 0 < img.height <= 200
    assert len(png) < 10_000


def test_plots_module_imports_neither_dagster_nor_pyplot() -> None:
    import cv_assets.lib.core.plots as plots

    tree = ast.parse(Path(plots.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    assert not any(name.split(".")[0] == "dagster" for name in imported)
    assert not any("pyplot" in name for name in imported)


def test_renderers_are_safe_to_call_from_several_threads() -> None:
    recall, precision, aps = pr_inputs(3)
    results: list[bytes] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(pr_curve_png(recall, precision, aps, CLASSES))
            results.append(confusion_matrix_png(np.eye(4) * 3, CLASSES))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 4 and all(decode(r).width > 0 for r in results)


def test_markdown_image_embeds_the_png_as_a_base64_data_uri() -> None:
    png = prediction_grid_png([], CLASSES)
    md = markdown_image(png, "alt")
    assert md.startswith("![alt](data:image/png;base64,")
    assert md.endswith(")")
    uri = png_data_uri(png)
    assert md == f"![alt]({uri})"
    assert base64.b64decode(uri.split(",", 1)[1]) == png


def test_markdown_image_escapes_brackets_in_the_alt_text() -> None:
    png = prediction_grid_png([], CLASSES)
    assert markdown_image(png, "a [b]\nc").startswith("![a \\[b\\] c](data:image/png;base64,")


def test_png_data_uri_rejects_bytes_that_are_not_a_png() -> None:
    with pytest.raises(ValueError, match="PNG"):
        png_data_uri(b"\xff\xd8\xff\xe0 a jpeg")
