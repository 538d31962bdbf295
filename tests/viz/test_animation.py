import numpy as np
import pytest
from PIL import Image, ImageSequence

from vaekit.errors import RunError
from vaekit.viz.animation import frame_paths, training_gif

EPOCHS = [1, 2, 9, 10, 11, 999, 1000]


def _level(epoch):
    return 20 + 2 * (EPOCHS.index(epoch))  # a distinct grey for each frame, in epoch order


@pytest.fixture
def run(tmp_path):
    folder = tmp_path / "run" / "pictures" / "samples"
    folder.mkdir(parents=True)
    for epoch in EPOCHS:
        name = f"epoch_{epoch:03d}.png"
        Image.new("L", (60, 40), _level(epoch)).save(folder / name)
    (folder / "notes.txt").write_text("not a frame")
    (folder / "epoch_final.png").write_bytes(b"not a frame either")
    return tmp_path / "run"


def test_frames_sort_by_epoch_number_not_by_name(run):
    found = frame_paths(run)
    assert [e for e, _ in found] == EPOCHS
    assert found[3][1].name == "epoch_010.png" and found[2][1].name == "epoch_009.png"
    assert found[-1][1].name == "epoch_1000.png"  # "epoch_1000" < "epoch_999" as text


def test_gif_has_one_captioned_frame_per_epoch_and_loops(run, tmp_path):
    out = training_gif(run, tmp_path / "anim.gif", duration_ms=100, final_hold_ms=700)
    with Image.open(out) as gif:
        assert gif.format == "GIF"
        assert gif.n_frames == len(EPOCHS)
        assert gif.info["loop"] == 0
        width, height = gif.size
        assert width == 60 and height > 40  # the caption strip sits above the grid
        strip = height - 40
        durations, levels, captions = [], [], []
        for frame in ImageSequence.Iterator(gif):
            durations.append(frame.info["duration"])
            pixels = np.asarray(frame.convert("L"), dtype=int)
            levels.append(int(np.median(pixels[strip:])))
            captions.append(pixels[:strip])
    assert levels == [_level(e) for e in EPOCHS]  # frames in numeric epoch order
    assert durations[:-1] == [100] * (len(EPOCHS) - 1) and durations[-1] == 700
    for caption in captions:
        assert caption.min() < 100 and caption.max() > 200  # dark text on a white strip
    assert not np.array_equal(captions[0], captions[1])  # each frame names its own epoch


def test_default_output_and_thinning(run):
    out = training_gif(run, max_frames=3)
    assert out == run / "pictures" / "training.gif"
    with Image.open(out) as gif:
        assert gif.n_frames == 3
        firsts = []
        for frame in ImageSequence.Iterator(gif):
            pixels = np.asarray(frame.convert("L"), dtype=int)
            firsts.append(int(np.median(pixels[-10:])))
    assert firsts[0] == _level(1) and firsts[-1] == _level(1000)


def test_no_frames_is_a_clear_run_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="no per-epoch sample frames"):
        training_gif(tmp_path / "empty", tmp_path / "x.gif")
    with pytest.raises(RunError, match="no such run directory"):
        training_gif(tmp_path / "missing", tmp_path / "x.gif")
    assert not (tmp_path / "x.gif").exists()
