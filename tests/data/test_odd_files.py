"""Odd but valid files, as real recordings come: each is decoded sensibly (finite, the right shape and
values), or refused with one sentence naming the file and what is wrong."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from byod_files import write_manifest, write_png, write_wav
from PIL import Image

from gru_mm.data.kinds.audio import Audio
from gru_mm.data.kinds.frames import Frames
from gru_mm.data.kinds.series import Series
from gru_mm.data.sources.base import SPLITS, SampleError
from gru_mm.data.sources.manifest import Manifest

RATE = 16000


def _tone(seconds: float, rate: int, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def _refused(decode, *args) -> str:
    with pytest.raises(SampleError) as err:
        decode(*args)
    return str(err.value)


# --- audio ---------------------------------------------------------------------------------------
ENCODINGS = {  # name: (rate, channels, libsndfile format, subtype)
    "u8.wav": (RATE, 1, "WAV", "PCM_U8"),
    "int24.wav": (RATE, 1, "WAV", "PCM_24"),
    "int32.wav": (RATE, 1, "WAV", "PCM_32"),
    "float64.wav": (RATE, 1, "WAV", "DOUBLE"),
    "mulaw.wav": (8000, 1, "WAV", "ULAW"),
    "alaw.wav": (8000, 1, "WAV", "ALAW"),
    "vorbis.ogg": (44100, 2, "OGG", "VORBIS"),
    "voice-note.opus": (48000, 1, "OGG", "OPUS"),
    "int24.flac": (48000, 1, "FLAC", "PCM_24"),
    "stereo-44k.wav": (44100, 2, "WAV", "PCM_16"),
    "stereo-48k.wav": (48000, 2, "WAV", "PCM_16"),
    "mono-8k.wav": (8000, 1, "WAV", "PCM_16"),
    "song.mp3": (44100, 2, "MP3", "MPEG_LAYER_III"),
    "studio.aiff": (48000, 2, "AIFF", "PCM_24"),
    "wav-inside.flac": (RATE, 1, "WAV", "PCM_16"),  # a wrong extension: libsndfile reads the content
}


@pytest.fixture(scope="module")
def reference_clip(tmp_path_factory) -> np.ndarray:
    path = tmp_path_factory.mktemp("ref") / "ref.wav"
    sf.write(str(path), _tone(0.5, RATE), RATE, subtype="PCM_16")
    return Audio().decode(path)["data"]


@pytest.mark.parametrize("name", list(ENCODINGS))
def test_every_encoding_decodes_to_the_same_spectrum(tmp_path, name, reference_clip):
    rate, channels, fmt, subtype = ENCODINGS[name]
    path = tmp_path / name
    sf.write(str(path), _tone(0.5, rate, channels), rate, format=fmt, subtype=subtype)
    logmel = Audio().decode(path)["data"]
    # 0.5 s at 16 kHz in 10 ms hops, centred frames (an MP3 encoder adds a few ms of padding)
    assert abs(len(logmel) - len(reference_clip)) <= (5 if fmt == "MP3" else 0)
    assert logmel.shape[1] == 40 and np.isfinite(logmel).all()
    middle = slice(5, 45)  # away from the edges, where codecs pad and ramp
    assert np.argmax(logmel[middle].mean(0)) == np.argmax(reference_clip[middle].mean(0))
    np.testing.assert_allclose(logmel[middle].max(1), reference_clip[middle].max(1), atol=0.6)


@pytest.mark.parametrize("seconds, frames", [(0.02, 3), (0.005, 1), (1 / RATE, 1)])
def test_clips_shorter_than_one_window_give_frames(tmp_path, seconds, frames):
    """A 5 ms click is shorter than half a 400-sample window: torch refused to reflect-pad it (a
    RuntimeError that ended the run); it is zero-padded instead."""
    path = tmp_path / "click.wav"
    sf.write(str(path), _tone(seconds, RATE) + 0.1, RATE)
    logmel = Audio().decode(path)["data"]
    assert logmel.shape == (frames, 40) and np.isfinite(logmel).all()
    waveform = Audio(features="waveform").decode(path)["data"]
    assert waveform.shape == (max(1, int(seconds * RATE)), 1)


def test_short_clip_at_another_rate_is_resampled_then_framed(tmp_path):
    path = tmp_path / "click.wav"
    sf.write(str(path), _tone(0.004, 44100, channels=2), 44100)  # 176 samples -> 64 at 16 kHz
    assert Audio(features="waveform").decode(path)["data"].shape == (64, 1)
    assert Audio().decode(path)["data"].shape == (1, 40)


def test_a_file_without_samples_is_refused_naming_it(tmp_path):
    path = tmp_path / "nothing.wav"
    sf.write(str(path), np.zeros(0), RATE)
    assert _refused(Audio().decode, path) == "empty audio: nothing.wav has no samples"


def test_digital_silence_gives_finite_features(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(str(path), np.zeros(RATE // 2), RATE, subtype="PCM_16")
    logmel = Audio().decode(path)["data"]
    assert logmel.shape == (51, 40)
    np.testing.assert_allclose(logmel, np.log(1e-6), rtol=1e-5)  # the floor: no -inf, no NaN


def test_nan_samples_are_refused_naming_the_file(tmp_path):
    path = tmp_path / "broken.wav"
    wave = _tone(0.1, RATE).astype(np.float32)
    wave[10:20] = np.nan
    sf.write(str(path), wave, RATE, subtype="FLOAT")
    assert _refused(Audio().decode, path) == "NaN or infinite values: broken.wav: 10 of 1600 values"


def test_a_wav_streamed_without_its_sizes_is_read_whole(tmp_path):
    """ffmpeg writing to a pipe cannot go back to fill in the sizes and leaves 0xFFFFFFFF: libsndfile
    reads such a file to its end; the truncation check called it cut short."""
    path = tmp_path / "piped.wav"
    sf.write(str(path), _tone(0.5, RATE), RATE, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    at = data.index(b"data")
    data[4:8] = data[at + 4 : at + 8] = b"\xff\xff\xff\xff"
    path.write_bytes(data)
    assert Audio().decode(path)["data"].shape == (51, 40)
    cut = tmp_path / "cut.wav"  # a real cut still is one
    sf.write(str(cut), _tone(0.5, RATE), RATE, subtype="PCM_16")
    cut.write_bytes(cut.read_bytes()[:8000])
    assert _refused(Audio().decode, cut) == "truncated audio: cut.wav holds 7956 of its 16000 data bytes"


def test_a_60_second_stereo_clip_is_quick(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(str(path), _tone(60, 44100, channels=2), 44100, subtype="PCM_16")
    start = time.perf_counter()
    logmel = Audio().decode(path)["data"]
    seconds = time.perf_counter() - start
    assert logmel.shape == (6001, 40) and np.isfinite(logmel).all()
    assert seconds < 5, f"decoding 60 s of 44.1 kHz stereo took {seconds:.1f} s"  # ~0.1 s measured
    assert Audio(features="waveform").decode(path)["data"].shape == (60 * RATE, 1)


def test_an_unknown_extension_is_refused_listing_the_known_ones(tmp_path):
    path = write_wav(tmp_path / "memo.m4a", fmt="WAV")  # AAC in MP4: not something libsndfile reads
    assert _refused(Audio().decode, path) == (
        "unsupported file type: memo.m4a (audio must be .wav/.flac/.ogg/.opus/.mp3/.aiff/.aif)"
    )


# --- frames ----------------------------------------------------------------------------------------
SMALL_FRAMES = Frames(height=16, width=16)


def _pixels(seed: int = 0, shape: tuple[int, int] = (30, 40)) -> np.ndarray:
    """A smooth RGB picture (lossy formats keep it close)."""
    y, x = np.mgrid[: shape[0], : shape[1]]
    rgb = np.stack([x / shape[1], y / shape[0], np.full(shape, 0.3 + 0.1 * seed)], axis=2)
    return (rgb * 255).astype(np.uint8)


@pytest.mark.parametrize(
    "name, save",
    [
        ("rgba.png", lambda im, p: im.convert("RGBA").save(p)),
        ("palette.png", lambda im, p: im.convert("P", palette=Image.Palette.ADAPTIVE).save(p)),
        ("cmyk.jpg", lambda im, p: im.convert("CMYK").save(p, quality=95)),
        ("still.gif", lambda im, p: im.save(p)),
        ("photo.webp", lambda im, p: im.save(p, quality=95)),
        ("scan.bmp", lambda im, p: im.save(p)),
        ("scan.tiff", lambda im, p: im.save(p)),
        ("upper.JPG", lambda im, p: im.save(p, format="JPEG", quality=95)),
        ("png-inside.jpg", lambda im, p: im.save(p, format="PNG")),
    ],
)
def test_colour_images_of_any_mode_and_format_decode_alike(tmp_path, name, save):
    reference = tmp_path / "ref.png"
    Image.fromarray(_pixels()).save(reference)
    save(Image.fromarray(_pixels()), tmp_path / name)
    expected = SMALL_FRAMES.decode([reference])["data"]
    got = SMALL_FRAMES.decode([tmp_path / name])["data"]
    assert got.shape == (1, 3, 16, 16) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=0.06)


@pytest.mark.parametrize("mode", ["1", "L"])
def test_grey_and_one_bit_images_become_three_equal_channels_or_one(tmp_path, mode):
    path = tmp_path / f"grey-{mode}.{'png' if mode == '1' else 'jpg'}"
    Image.fromarray(_pixels()).convert(mode).save(path)
    rgb = SMALL_FRAMES.decode([path])["data"]
    assert rgb.shape == (1, 3, 16, 16) and (rgb[:, 0] == rgb[:, 1]).all() and (rgb[:, 1] == rgb[:, 2]).all()
    grey = Frames(height=16, width=16, channels=1).decode([path])["data"]
    np.testing.assert_allclose(grey[:, 0], rgb[:, 0], atol=1e-6)


def test_sixteen_bit_grey_keeps_its_range(tmp_path):
    """A 16-bit PNG (depth cameras, medical and scientific images): convert("L") clipped every value
    above 255 of 65535 to white."""
    path = tmp_path / "depth.png"
    ramp = np.tile(np.linspace(0, 65535, 64), (32, 1)).astype(np.uint16)  # black (left) to white (right)
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    for channels in (1, 3):
        frames = Frames(height=8, width=8, channels=channels).decode([path])["data"]
        assert frames.shape == (1, channels, 8, 8) and frames.min() >= 0 and frames.max() <= 1
        row = frames[0, 0, 4]
        assert row[0] < 0.1 and row[-1] > 0.9 and (np.diff(row) > 0).all()


def test_exif_orientation_is_applied(tmp_path):
    """A phone stores a portrait photo's pixels sideways with EXIF orientation 6 (turn 90 degrees
    clockwise to view): the frame is the photo as it is seen, white band on top."""
    upright = np.zeros((40, 30, 3), np.uint8)
    upright[:10] = 255  # top quarter white
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # what the sensor wrote
    exif = stored.getexif()
    exif[0x0112] = 6
    stored.save(tmp_path / "portrait.jpg", exif=exif, quality=95)
    frame = Frames(height=8, width=6, channels=1).decode([tmp_path / "portrait.jpg"])["data"][0, 0]
    assert frame[0].mean() > 0.9 and frame[3:].max() < 0.1


def test_a_folder_of_unpadded_numbers_is_in_recording_order_and_macos_litter_is_skipped(tmp_path):
    """frame_10.png sorted before frame_2.png (the steps came out scrambled), and the "._frame_3.png"
    that macOS writes beside each file it copies (not an image) made the whole sample a problem."""
    for n in range(1, 13):
        Image.fromarray(np.full((4, 4), n * 20, np.uint8)).save(tmp_path / f"frame_{n}.png")
    (tmp_path / "._frame_3.png").write_bytes(b"\x00\x05\x16\x07" + b"\0" * 60)  # AppleDouble
    frames = Frames(height=2, width=2, channels=1).decode(tmp_path)["data"]
    np.testing.assert_allclose(frames[:, 0, 0, 0] * 255, [n * 20 for n in range(1, 13)], atol=1e-3)


def test_an_animation_is_refused_naming_its_frame_count(tmp_path):
    frames = [Image.fromarray(_pixels(seed)) for seed in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert _refused(SMALL_FRAMES.decode, [tmp_path / "anim.gif"]) == (
        "several images in one file: anim.gif holds 3 frames; give each frame as its own image file"
    )


def test_tiny_and_differently_sized_frames_stack(tmp_path):
    Image.fromarray(np.full((1, 1, 3), 200, np.uint8)).save(tmp_path / "dot.png")
    Image.fromarray(_pixels(shape=(300, 100))).save(tmp_path / "tall.png")
    Image.fromarray(_pixels(shape=(20, 500))).save(tmp_path / "wide.jpg")
    frames = SMALL_FRAMES.decode([tmp_path / p for p in ("dot.png", "tall.png", "wide.jpg")])["data"]
    assert frames.shape == (3, 3, 16, 16) and np.isfinite(frames).all()
    np.testing.assert_allclose(frames[0], 200 / 255, atol=1e-6)  # one pixel, stretched


def test_an_image_beyond_pillows_pixel_limit_is_refused_not_a_crash(tmp_path, monkeypatch):
    """Pillow raises DecompressionBombError (not an OSError) past twice its pixel limit; it ended the
    whole run. The limit is lowered here so that a small file passes it."""
    path = write_png(tmp_path / "panorama.png", size=100)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    message = _refused(SMALL_FRAMES.decode, [path])
    assert message.startswith("image too large: panorama.png: Image size (10000 pixels) exceeds limit")


@pytest.mark.slow
def test_a_12_megapixel_photo_decodes_quickly(tmp_path):
    path = tmp_path / "photo.jpg"
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 40, (3000, 4000, 3), dtype=np.uint8)  # texture: a JPEG's worst case
    Image.fromarray((_pixels(shape=(3000, 4000)) // 2 + noise).astype(np.uint8)).save(path, quality=90)
    frames = Frames(height=64, width=64)
    start = time.perf_counter()
    decoded = frames.decode([path])["data"]
    seconds = time.perf_counter() - start
    assert decoded.shape == (1, 3, 64, 64) and decoded.min() >= 0 and decoded.max() <= 1
    assert seconds < 2, f"one 4000x3000 JPEG took {seconds:.2f} s"  # ~0.08 s measured (0.2 s before draft)
    full = np.asarray(Image.open(path).convert("RGB").resize((64, 64), Image.Resampling.BILINEAR)) / 255
    np.testing.assert_allclose(decoded[0].transpose(1, 2, 0), full, atol=0.05)  # as a full decode


# --- series ----------------------------------------------------------------------------------------
def _csv(tmp_path: Path, name: str, text: str, encoding: str | None = None) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding or ("cp1252" if "cp1252" in name else "utf-8")))
    return path


def test_series_csv_with_bom_and_crlf_keeps_its_time_column(tmp_path):
    path = _csv(tmp_path, "excel.csv", "time,hr,spo2\r\n0,61,98\r\n0.5,62,97\r\n", encoding="utf-8-sig")
    out = Series().decode(path)
    np.testing.assert_array_equal(out["data"], [[61, 98], [62, 97]])
    np.testing.assert_array_equal(out["times"], [0, 0.5])


@pytest.mark.parametrize(
    "text, times",
    [
        ("Time,a\n0,1\n1.5,2\n", [0, 1.5]),  # another case
        ("a, time\n1, 0\n2, 0.5\n", [0, 0.5]),  # a space after the comma
        ("time,a\n2024-05-01 10:00:00,1\n2024-05-01T10:00:00.5Z,2\n", [0, 0.5]),  # ISO 8601 date-times
        ("time,a\n2024-10-27T02:59:59+02:00,1\n2024-10-27T02:00:00+01:00,2\n", [0, 1]),  # clocks go back
    ],
)
def test_the_time_column_is_found_and_read_as_seconds(tmp_path, text, times):
    """A column named "Time" was a feature like any other; a date-time column made the file non-numeric."""
    out = Series().decode(_csv(tmp_path, "log.csv", text))
    np.testing.assert_array_equal(out["data"], [[1], [2]])
    np.testing.assert_allclose(out["times"], times)


def test_a_time_column_of_words_is_refused(tmp_path):
    path = _csv(tmp_path, "log.csv", "time,a\n05/01/2024 10:00,1\n05/01/2024 10:01,2\n")  # day or month?
    assert _refused(Series().decode, path) == (
        "non-numeric values: log.csv column 'time' holds neither numbers nor ISO 8601 date-times"
    )


def test_series_csv_without_a_header_is_refused_not_cut_short(tmp_path):
    """pandas took the first row for column names: a step was silently lost."""
    path = _csv(tmp_path, "raw.csv", "0,1.5,2\n1,3,4\n2,5,6\n")
    assert _refused(Series().decode, path) == (
        "no header row: raw.csv starts with numbers (0, 1.5, 2); a series CSV's first line names its columns"
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a,b\n7,8\n", [[7, 8]]),  # a single row
        ("a,b\n1,2\n3,4\n", [[1, 2], [3, 4]]),  # integer columns
        ("a,b,\n1,2,\n3,4,\n", [[1, 2], [3, 4]]),  # a comma ending each line
        ("a,b\n1,2\n\n3,4\n\n", [[1, 2], [3, 4]]),  # blank lines
        ("on,b\nTrue,2\nFalse,4\n", [[1, 2], [0, 4]]),  # a True/False column
        ("time, a, b\n0, 1, 2\n1, 3, 4\n", [[1, 2], [3, 4]]),  # spaces after commas
        # European spreadsheet exports: semicolons or tabs between fields, decimal commas (also only in a
        # later row), or decimal points after all
        ("time;a;b\n0,0;1,5;2\n0,1;3,25;-5e-1\n", [[1.5, 2], [3.25, -0.5]]),
        ("a;b\n1;2\n3;4,5\n", [[1, 2], [3, 4.5]]),
        ("a;b\n1.5;2\n3;4\n", [[1.5, 2], [3, 4]]),
        ("time\ta\tb\n0\t1,5\t2\n1\t3\t4\n", [[1.5, 2], [3, 4]]),
    ],
)
def test_plain_csv_variants_decode_to_their_numbers(tmp_path, text, expected):
    out = Series().decode(_csv(tmp_path, "s.csv", text))
    assert out["data"].dtype == np.float32
    np.testing.assert_array_equal(out["data"], expected)


@pytest.mark.parametrize(
    "name, text, message",
    [
        (
            "gaps.csv",
            "a,b\n1,\n2,NaN\n3,4\n",
            "NaN or infinite values: gaps.csv: 2 of 6 values are NaN or empty "
            "(set data.source.series.missing=mask if they are unmeasured values)",
        ),
        ("inf.csv", "a,b\n1,inf\n2,3\n", "NaN or infinite values: inf.csv: 1 of 4 values"),
        ("head.csv", "a,b\n", "empty series: head.csv has a header but no rows"),
        ("empty.csv", "", "unreadable table: empty.csv: No columns to parse from file"),
        (
            "cp1252.csv",
            "a,\xe9t\xe9\n1,2\n",
            "unreadable table: cp1252.csv is not UTF-8 text: save it as UTF-8",
        ),
    ],
)
def test_bad_csv_cells_are_refused_naming_the_file(tmp_path, name, text, message):
    assert _refused(Series().decode, _csv(tmp_path, name, text)) == message


def test_empty_cells_are_kept_as_missing_with_missing_mask(tmp_path):
    out = Series(missing="mask").decode(_csv(tmp_path, "gaps.csv", "a,b\n1,\n2,NaN\n3,4\n"))
    assert np.isnan(out["data"]).sum() == 2
    prepared = Series(missing="mask").prepare(out["data"], None, None)
    assert prepared.shape == (3, 6) and np.isfinite(prepared).all()  # nothing NaN reaches the model


def test_npy_arrays_that_cannot_be_float32_are_refused(tmp_path):
    np.save(tmp_path / "iq.npy", np.ones((4, 2), complex))
    assert _refused(Series().decode, tmp_path / "iq.npy") == (
        "complex values: iq.npy has dtype complex128: save the real and imaginary parts as two features"
    )
    np.save(tmp_path / "huge.npy", np.full((4, 2), 1e300))
    assert _refused(Series().decode, tmp_path / "huge.npy") == (
        "values too large: huge.npy holds values beyond float32's +-3.4e38"
    )
    np.save(tmp_path / "flags.npy", np.array([[True, False]] * 3))
    np.testing.assert_array_equal(Series().decode(tmp_path / "flags.npy")["data"], [[1, 0]] * 3)


# --- the manifest and its text ----------------------------------------------------------------------
TEXTS = {
    "r0": ("", "low"),  # an empty cell: the text is absent
    "r1": (" \t ", " low "),  # only whitespace: absent too (and the label is stripped)
    "r2": ("Café naïve déjà vu", "très haut"),
    "r3": ("我喜欢猫 和狗", "低"),
    "r4": ("dog 🐶 cat", "42"),
    "r5": ("line one\r\nline two", "042"),
    "r6": (" ".join(["word"] * 10_000), "low"),
    "r7": ("🎉🎉", "low"),  # no word at all: refused
    "r8": ("plain words", "low"),
}


def _odd_rows(tmp_path: Path) -> list[dict]:
    write_wav(tmp_path / "my clips" / "café 音 1.wav", 0.3)
    return [
        {"id": rid, "label": label, "split": (["train"] * 6 + ["test", "val", "val"])[i], "text": text,
         "audio": "my clips/café 音 1.wav"}
        for i, (rid, (text, label)) in enumerate(TEXTS.items())
    ]  # fmt: skip


def _check_odd_manifest(source: Manifest) -> None:
    samples = {s.id: s for split in SPLITS for s in source.split(split)}
    assert [p.line() for p in source.problems] == ["r7\ttext\tno words: '🎉🎉' has no words to tokenise"]
    assert source.labels.classes == ["042", "42", "low", "très haut", "低"]  # numbers stay names
    text = {k: s.modalities["text"] for k, s in samples.items()}
    assert text["r0"] is None and text["r1"] is None
    words = source.vocab["text"].tokens
    assert [words[i] for i in text["r2"]] == ["café", "naïve", "déjà", "vu"]
    assert [words[i] for i in text["r3"]] == ["我喜欢猫", "和狗"]  # CJK: one token per space-separated run
    assert [words[i] for i in text["r4"]] == ["dog", "cat"]
    assert [words[i] for i in text["r5"]] == ["line", "one", "line", "two"]
    assert text["r6"].shape == (10_000,)
    assert all(s.modalities["audio"].shape == (16, 40) for s in samples.values())  # 0.3 s at 8 kHz, hop 160


def test_csv_manifest_with_bom_crlf_unicode_paths_read_from_another_folder(tmp_path, monkeypatch):
    rows = _odd_rows(tmp_path / "data set")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, list(rows[0]), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    (tmp_path / "data set" / "manifest é.csv").write_bytes(buffer.getvalue().encode("utf-8-sig"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # the files are found beside the manifest, not the cwd
    _check_odd_manifest(Manifest(Path("../data set/manifest é.csv"), audio={"sample_rate": 8000}))


def test_jsonl_manifest_with_a_byte_order_mark(tmp_path):
    """Notepad starts UTF-8 files with a BOM: json.loads refused the first row."""
    rows = _odd_rows(tmp_path)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in rows)
    (tmp_path / "m.jsonl").write_bytes(text.encode("utf-8-sig"))
    _check_odd_manifest(Manifest(tmp_path / "m.jsonl", audio={"sample_rate": 8000}))


def test_a_manifest_written_on_windows_finds_its_files(tmp_path):
    write_wav(tmp_path / "audio" / "clip 1.wav", 0.2)
    write_wav(tmp_path.parent / "outside.wav", 0.2)
    paths = ["audio\\clip 1.wav", "audio/clip 1.wav", "..\\outside.wav"]
    rows = [
        {"id": f"r{i}", "label": "a", "split": split, "audio": path}
        for i, (split, path) in enumerate(zip(SPLITS, paths, strict=True))
    ]
    source = Manifest(write_manifest(tmp_path / "m.csv", rows), audio={"sample_rate": 8000})
    assert [len(source.split(s)) for s in SPLITS] == [1, 1, 0]
    assert source.problems[0].line() == (
        f"r2\taudio\tpath leaves the manifest folder: ..\\outside.wav is outside {tmp_path}"
    )


def test_manifests_from_a_spreadsheet_say_what_is_wrong(tmp_path):
    from gru_mm.data.sources.base import DataError

    (tmp_path / "cp1252.csv").write_bytes("id,label,text\r\na,café,hello\r\n".encode("cp1252"))
    with pytest.raises(DataError) as err:
        Manifest(tmp_path / "cp1252.csv").load()
    assert str(err.value) == (
        f"data.path={tmp_path / 'cp1252.csv'} is not UTF-8 text: save it as UTF-8 (Excel: CSV UTF-8)"
    )
    (tmp_path / "semicolons.csv").write_text("id;label;text\na;x;hello\n")
    with pytest.raises(DataError) as err:
        Manifest(tmp_path / "semicolons.csv").load()
    assert str(err.value) == f"{tmp_path / 'semicolons.csv'} has no 'id' column (its columns: id;label;text)"


def test_a_new_decoder_revision_decodes_cached_files_again(tmp_path, monkeypatch):
    """What a store holds from an older decoder (arrays, and refusals such as a .webp's) is not reused."""
    rows = []
    for i, split in enumerate(SPLITS):
        Image.fromarray(_pixels(i)).save(tmp_path / f"{i}.webp")
        np.save(tmp_path / f"{i}.npy", np.ones((3, 2)))
        rows.append({"id": f"r{i}", "label": "a", "split": split, "frames": f"{i}.webp"})
        rows[-1]["series"] = f"{i}.npy"
    manifest = write_manifest(tmp_path / "m.csv", rows)
    Manifest(manifest, cache_dir=tmp_path / "cache").load()
    again = Manifest(manifest, cache_dir=tmp_path / "cache")
    again.load()
    assert again.cache.misses == 0
    monkeypatch.setattr(Frames, "revision", Frames.revision + 1)
    revised = Manifest(manifest, cache_dir=tmp_path / "cache")
    revised.load()
    assert (revised.cache.misses, revised.cache.hits) == (3, 3)  # the frames again, the series from the store


# --- end to end ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_manifest_of_odd_files_validates_and_trains(tmp_path):
    from conftest import run_cli

    root = tmp_path / "my data"
    rows = []
    audio = [
        ("u8.wav", "WAV", "PCM_U8", 8000),
        ("c.opus", "OGG", "OPUS", 48000),
        ("s.mp3", "MP3", None, 44100),
    ]
    for i in range(18):
        name, fmt, subtype, rate = audio[i % 3]
        seconds = 0.005 if i == 4 else 0.3  # one click shorter than a window
        clip = root / "audio" / f"{i} {name}"
        clip.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(clip), _tone(seconds, rate, 2, freq=300 + 200 * (i % 3)), rate, subtype, format=fmt)
        frames = root / "frames" / f"{i}"
        frames.mkdir(parents=True)
        Image.fromarray(_pixels(i % 3)).convert("RGBA").save(frames / "0.png")
        Image.fromarray(_pixels(i % 3)).convert("P").save(frames / "1.gif")
        Image.fromarray(_pixels(i % 3)[..., 0].astype(np.uint16) * 257).save(frames / "2.png")  # 16-bit
        series = root / "series" / f"{i}.csv"
        series.parent.mkdir(parents=True, exist_ok=True)
        series.write_bytes(f"time,a,b,\r\n0,{i % 3},1,\r\n1,{i % 3 + 1},2,\r\n".encode("utf-8-sig"))
        rows.append(
            {
                "id": f"s{i}",
                "label": ["ünï", "42", "two words"][i % 3],
                "split": (["train"] * 4 + ["val", "test"])[i % 6],
                "audio": f"audio/{i} {name}",
                "frames": f"frames/{i}",
                "series": f"series/{i}.csv",
                "text": ["café 🐶", "我 喜欢", "plain words"][i % 3],
            }
        )
    rows[17]["frames"] = "frames/17/anim.gif"  # refused: an animation
    animation = [Image.fromarray(_pixels(s)) for s in range(2)]
    animation[0].save(root / "frames" / "17" / "anim.gif", save_all=True, append_images=animation[1:])
    manifest = write_manifest(root / "manifest.csv", rows)
    small = [
        "data.source.audio.sample_rate=8000",
        "data.source.frames.height=8",
        "data.source.frames.width=8",
    ]
    result = run_cli(
        "python", "-m", "gru_mm.validate_data", f"data.path={manifest}", f"paths.root={tmp_path}", *small
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stdout.splitlines()[0] == (
        "s17\tframes\tseveral images in one file: anim.gif holds 2 frames; "
        "give each frame as its own image file"
    )
    assert "17 usable sample(s), 1 problem(s)" in result.stdout
    result = run_cli(
        "gru-mm-train",
        "data=manifest",
        f"data.path={manifest}",
        "data.on_error=skip",
        f"paths.root={tmp_path / 'run'}",
        "logger=csv",
        "trainer.max_epochs=1",
        "model.gru.hidden_size=8",
        "model.head.hidden=8",
        "data.batch_size=4",
        "trainer.enable_progress_bar=false",
        *small,
        "+model/encoder@model.encoders.frames=frame_cnn_rgb",
        "+model/encoder@model.encoders.text=text_embedding",
        "+model/encoder@model.encoders.series=series_linear",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test/acc" in result.stdout
    metrics = next((tmp_path / "run").glob("logs/train/runs/*/**/metrics.csv"))
    assert "train/loss" in metrics.read_text().splitlines()[0]
    assert os.path.getsize(metrics) > 0
