import numpy as np
import pytest
from PIL import Image

from coopgrid import datasets
from coopgrid.errors import DatasetError


def test_digits_n_repeats_the_set_with_labels_and_unique_ids():
    d = datasets.digits(4000)
    assert d.x.shape == (4000, 64) and len(d.y) == 4000
    assert len(set(d.item_ids())) == 4000
    base = datasets.digits()
    n = len(base)
    np.testing.assert_array_equal(d.x[:n], base.x)  # copy 0 is the original
    np.testing.assert_array_equal(d.y[n : 2 * n], base.y)
    assert not np.array_equal(d.x[n : 2 * n], base.x)  # later copies are augmented
    np.testing.assert_array_equal(datasets.digits(4000).x, d.x)  # deterministically


def test_npz_round_trip_keeps_x_y_and_ids():
    d = datasets.Dataset(np.arange(6).reshape(3, 2), np.array([0, 1, 0]), np.array(["a", "b", "c"]))
    back = datasets.Dataset.from_npz(d.to_npz())
    np.testing.assert_array_equal(back.x, d.x)
    np.testing.assert_array_equal(back.y, d.y)
    assert back.item_ids() == ["a", "b", "c"]


def test_image_directory_is_resized_and_light_pages_are_inverted(tmp_path):
    img = Image.new("L", (32, 32), 255)
    img.paste(0, (12, 4, 20, 28))  # a dark vertical bar on a white page
    img.save(tmp_path / "one.png")
    d = datasets.load(str(tmp_path), (8, 8), 16.0)
    assert d.x.shape == (1, 64) and d.item_ids() == ["one.png"]
    pixels = d.x.reshape(8, 8)
    assert pixels[4, 4] > 12 and pixels[4, 0] < 1  # ink is bright, background dark


@pytest.mark.parametrize(
    "spec, message",
    [
        ("digits:abc", "must be a number"),
        ("sequence", "needs a length"),
        ("nowhere.npz", "no such file or directory: 'nowhere.npz'"),  # a missing file, not an unknown name
        ("some/dir", "no such file or directory"),
        ("nowhere", "unknown dataset 'nowhere': give digits"),
    ],
)
def test_bad_dataset_names_say_what_to_give(spec, message):
    with pytest.raises(DatasetError, match=message):
        datasets.load(spec)


def test_undecodable_image_is_named(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="broken.png"):
        datasets.load(str(tmp_path))


def test_npz_without_x_is_refused():
    import io

    buf = io.BytesIO()
    np.savez(buf, y=np.arange(3))
    with pytest.raises(DatasetError, match="'x'"):
        datasets.Dataset.from_npz(buf.getvalue())
