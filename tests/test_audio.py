"""Audio: clips read from files, the log-mel features against librosa's own, the speech_digits
renders (seeded, cached, held out by voice), SpecAugment's masks, and a speech run from training
to `torchloom predict RUN_DIR clip.wav`."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import torchloom as tl
from tests.conftest import require
from torchloom.cli import main
from torchloom.data import Augment, BatchLoader
from torchloom.data.audio import LogMel, audio_folder
from torchloom.data.preprocess import Preprocess
from torchloom.errors import DataError, TorchloomError
from torchloom.models.audio import LogMelInput

soundfile = require("soundfile", "pip install 'torchloom[audio]'")
RATE = 16000


def tone(seconds: float, rate: int, frequency: float, amplitude: float = 0.5) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * frequency * np.arange(int(seconds * rate)) / rate)


def test_audio_folder_reads_wav_flac_ogg_as_mono_resampled_and_padded_or_cut(tmp_path):
    soxr = require("soxr", "pip install 'torchloom[audio]'")

    (tmp_path / "high").mkdir()
    (tmp_path / "low").mkdir()
    left, right = tone(0.5, 44100, 1000), tone(0.5, 44100, 1000, 0.1)
    soundfile.write(tmp_path / "high" / "a__1.wav", np.stack([left, right], 1), 44100, "FLOAT")
    long = tone(1.5, 8000, 300)  # 8 kHz, 1.5 s: resampled up, then cut
    soundfile.write(tmp_path / "low" / "b__1.flac", long, 8000, "PCM_24")
    soundfile.write(tmp_path / "low" / "a__2.ogg", tone(0.8, RATE, 440), RATE, "VORBIS")
    (tmp_path / "low" / "notes.txt").write_text("not a clip")  # not an audio suffix: ignored

    table = audio_folder(str(tmp_path), sample_rate=RATE, seconds=1.0, group_by="^(.+)__")
    assert table.classes == ["high", "low"] and table.targets.tolist() == [0, 1, 1]
    assert table.features.shape == (3, RATE) and table.features.dtype == np.float32
    assert table.groups.tolist() == ["a", "a", "b"]  # the speaker before "__"
    stereo = soxr.resample(((left + right) / 2).astype(np.float32), 44100, RATE)  # mono 16 kHz
    np.testing.assert_allclose(table.features[0, : len(stereo)], stereo, atol=1e-6)
    assert not table.features[0, len(stereo) :].any()  # padded with silence at the end
    expected_low = soxr.resample(long.astype(np.float32), 8000, RATE)[:RATE]  # its first second
    np.testing.assert_allclose(table.features[2], expected_low, atol=1e-5)  # 24-bit rounding
    spectrum = np.abs(np.fft.rfft(table.features[1]))  # lossy Vorbis: the tone survives
    assert abs(int(spectrum.argmax()) - 440) <= 1 and not table.features[1, 13000:].any()
    assert table.audio == LogMel(sample_rate=RATE).to_json()
    assert len(table.feature_names) == 101 * 40 and table.feature_names[41] == "frame_1_mel_1"

    (tmp_path / "low" / "broken.wav").write_bytes(b"RIFF not really a wave")
    with pytest.raises(DataError, match=r"1 of 4 clips cannot be read: .*broken\.wav: cannot"):
        audio_folder(str(tmp_path))
    with pytest.raises(DataError, match=r"data.group_by: '\^x' does not match .*'a__1.wav'"):
        audio_folder(str(tmp_path), group_by="^x")


def test_log_mel_features_equal_librosas_melspectrogram_in_decibels():
    librosa = require("librosa", "pip install 'torchloom[audio]'")
    noise = np.random.default_rng(0).standard_normal((3, RATE)).astype(np.float32)
    clips = noise * np.float32(0.05)
    clips[0] += tone(1.0, RATE, 440, 0.3).astype(np.float32)
    clips[2, :10000] = 0  # silence: the floor 80 dB under the clip's loudest value
    settings = [{}, {"n_mels": 64, "n_fft": 512, "hop_length": 128, "fmin": 50.0, "fmax": 6000.0}]
    for setting in settings:
        features = LogMel(**setting)
        ours = features.encode(clips)
        assert ours.shape == (3, *features.shape)
        for clip, mine in zip(clips, ours, strict=True):
            power = librosa.feature.melspectrogram(
                y=clip, sr=RATE, n_fft=features.n_fft, hop_length=features.hop_length,
                n_mels=features.n_mels, fmin=features.fmin, fmax=features.fmax,
            )  # fmt: skip
            np.testing.assert_allclose(mine, librosa.power_to_db(power).T, atol=1e-3)


def test_bad_log_mel_options_are_named_at_once():
    with pytest.raises(DataError, match=r"data.mel.n_mel: unknown key. Did you mean 'n_mels'\?"):
        LogMel.from_options(RATE, 1.0, {"n_mel": 40})
    with pytest.raises(DataError) as raised:
        LogMel.from_options(RATE, 0.01, {"n_fft": 400, "hop_length": 0})
    assert "data.mel.hop_length: expected a whole number >= 1, got 0." in str(raised.value)
    with pytest.raises(DataError, match=r"fmin < fmax <= 8000 .* fmax 9000"):
        LogMel.from_options(RATE, 1.0, {"fmax": 9000.0})


@pytest.mark.usefixtures("speech_cache")  # the synthesizers are installed, or a skip says so
def test_speech_digits_renders_the_same_files_twice_and_reuses_its_cache(tmp_path, monkeypatch):
    from torchloom.data import speech

    first = speech.speech_digits(words=["yes", "no"], variants=1, cache=str(tmp_path / "a"))
    second = speech.speech_digits(words=["yes", "no"], variants=1, cache=str(tmp_path / "b"))
    (folder_a,) = (tmp_path / "a" / "speech_digits").iterdir()
    (folder_b,) = (tmp_path / "b" / "speech_digits").iterdir()
    files = sorted(path.relative_to(folder_a) for path in folder_a.rglob("*.wav"))
    assert len(files) == 2 * len(speech.VOICES) == len(first.features)
    assert files == sorted(path.relative_to(folder_b) for path in folder_b.rglob("*.wav"))
    assert all((folder_a / f).read_bytes() == (folder_b / f).read_bytes() for f in files)
    np.testing.assert_array_equal(first.features, second.features)
    manifest = json.loads((folder_a / "manifest.json").read_text())
    assert {clip["speaker"] for clip in manifest["clips"]} == set(first.groups)
    assert {clip["snr"] for clip in manifest["clips"]} == set(speech.SNRS)  # clean and noisy
    assert sorted(manifest["engines"]) == ["espeak-ng", "flite", "sox"]
    levels = np.abs(first.features).max(axis=1)
    assert levels.min() > 0.2 and levels.max() <= 1.0  # every clip says something, unclipped

    def no_render(*args):
        raise AssertionError("rendered again")

    monkeypatch.setattr(speech, "render", no_render)  # a complete folder is read as it is
    again = speech.speech_digits(words=["yes", "no"], variants=1, cache=str(tmp_path / "a"))
    np.testing.assert_array_equal(again.features, first.features)


@pytest.mark.usefixtures("speech_cache")
def test_a_missing_synthesizer_names_its_apt_package(tmp_path, monkeypatch):
    import shutil

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for program in ("flite", "sox"):  # espeak-ng is not there
        (bin_dir / program).symlink_to(shutil.which(program))
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(DataError) as raised:
        tl.data.load("speech_digits", variants=1, cache=str(tmp_path / "cache"))
    message = str(raised.value)
    assert "espeak-ng is not installed (not on PATH)" in message
    assert "apt-get install -y espeak-ng (or set data.cache" in message
    assert not (tmp_path / "cache").exists()  # refused before anything is written


def test_speech_digits_holds_out_whole_voices_and_can_test_on_the_other_engine(speech_cache):
    options = {"words": ["yes", "no"], "variants": 1, "cache": str(speech_cache)}
    data = tl.data.load("speech_digits", val=0.1, test=0.2, seed=3, **options)
    voices = data.preprocess.extra["groups"]
    train, val, test = (set(voices[split]) for split in ("train", "val", "test"))
    assert not train & test and not train & val and not val & test
    assert len(train | val | test) == 52 and (len(val), len(test)) == (6, 11)
    assert sum(voice.startswith("flite/") for voice in test) == 1  # each engine its share
    assert len(data.test) == 2 * len(test) and len(data.val) == 2 * len(val)  # 2 clips a voice
    engine = tl.data.load("speech_digits", val=0.1, split="engine", **options)
    voices = engine.preprocess.extra["groups"]
    assert {voice.split("/")[0] for voice in voices["test"]} == {"flite"}
    assert len(voices["test"]) == 4 and len(engine.test) == 8
    assert not any(voice.startswith("flite") for voice in voices["train"] + voices["val"])
    # Waveforms, which the model's front end turns into log-mel spectrograms standardized per
    # mel band on the training clips: the bands' means are 0 there.
    assert data.train.features.shape[1:] == (16000,) and data.preprocess.per == "frequency"
    front = LogMelInput(torch.nn.Identity(), data.preprocess).eval()
    spectrograms = front(data.train.features)
    assert spectrograms.shape[1:] == (101, 40)
    band_means = spectrograms.mean(dim=(0, 1))
    assert band_means.abs().max() < 1e-4 and len(data.preprocess.mean) == 40
    # The same numbers as the host's librosa-checked encode, scaled by the saved statistics.
    host = data.preprocess.audio.encode(data.val.features.numpy())
    scaled = (host - np.float32(data.preprocess.mean)) / np.float32(data.preprocess.std)
    torch.testing.assert_close(front(data.val.features), torch.from_numpy(scaled))


def test_the_front_end_masks_in_training_only_seeded_by_its_saved_count():
    """SpecAugment inside the model: masks in train mode, drawn from (seed, batches masked so
    far); the count is in the state dict, so a model restored from it draws the same masks."""
    clips = torch.from_numpy(np.random.default_rng(0).normal(0, 0.1, (6, 8000)).astype(np.float32))
    preprocess = Preprocess(["x"], ["a"], "classification", audio=LogMel(seconds=0.5))
    masks = Augment(time_mask=10, freq_mask=6, seed=3)
    front = LogMelInput(torch.nn.Identity(), preprocess, masks)
    plain = front.eval()(clips)
    assert not (plain == 0).all(dim=2).any()  # no frame silenced without masks
    front.train()
    first, second = front(clips), front(clips)
    assert not torch.equal(first, second) and int(front.masked_batches) == 2
    assert ((first == 0) != (plain == 0)).any()  # masks hid frames or bands
    saved = {k: v.clone() for k, v in front.state_dict().items()}
    assert set(saved) == {"masked_batches"}  # window, filterbank, scaler: from preprocess.json
    third = front(clips)
    restored = LogMelInput(torch.nn.Identity(), preprocess, masks).train()
    restored.load_state_dict(saved)
    assert torch.equal(restored(clips), third)
    with pytest.raises(TorchloomError, match=r"hears clips of 8000 samples .* got inputs of"):
        front(torch.zeros(2, 100))


def test_spectrogram_masks_are_seeded_per_batch_and_hide_bands_and_frames():
    spectrograms = torch.randn(16, 51, 40) + 10  # no value is 0 before masking
    augment = Augment(time_mask=8, freq_mask=5, masks=2, seed=0)
    masked = augment(spectrograms, epoch=1, batch_index=3)
    assert torch.equal(masked, Augment(time_mask=8, freq_mask=5, seed=0)(spectrograms, 1, 3))
    assert not torch.equal(masked, augment(spectrograms, epoch=1, batch_index=4))
    assert not torch.equal(masked, Augment(time_mask=8, freq_mask=5, seed=1)(spectrograms, 1, 3))
    hidden = masked == 0
    assert torch.equal(masked[~hidden], spectrograms[~hidden])  # the rest is untouched
    frames, bands = hidden.all(dim=2), hidden.all(dim=1)  # whole frames and whole bands
    assert torch.equal(hidden, frames[:, :, None] | bands[:, None, :])
    assert int(frames.sum(dim=1).max()) <= 16 and int(bands.sum(dim=1).max()) <= 10
    assert frames.any(dim=1).sum() >= 12 and bands.any(dim=1).sum() >= 12

    targets = torch.arange(16)
    loader = BatchLoader(spectrograms, targets, batch_size=4, seed=0, augment=augment)
    iterator = iter(loader)
    next(iterator)
    state = loader.state_dict()
    rest = [inputs for inputs, _ in iterator]
    resumed = BatchLoader(spectrograms, targets, batch_size=4, seed=9, augment=augment)
    resumed.load_state_dict(state)  # mid-epoch: the same batches with the same masks
    assert all(torch.equal(a, b) for (a, _), b in zip(resumed, rest, strict=True))
    with pytest.raises(DataError, match=r"time_mask and freq_mask need spectrograms .*\(1, 8, 8\)"):
        Augment(time_mask=4).check((1, 8, 8), "digits")
    with pytest.raises(DataError, match=r"masks of up to 40 mel bands would hide whole"):
        Augment(freq_mask=40).check((51, 40), "speech_digits")


def test_audio_cnn_takes_spectrograms_and_says_what_it_takes():
    model = tl.models.build("audio_cnn", channels=[8, 16])
    tl.models.materialize(model, torch.zeros(2, 51, 40), 10)
    spectrograms = torch.randn(3, 51, 40)
    model.eval()
    outputs = model(spectrograms)
    assert outputs.shape == (3, 10)
    # Each band is centered on its mean over the clip: a steady offset per band changes nothing.
    shifted = model(spectrograms + torch.linspace(-5, 5, 40))
    torch.testing.assert_close(shifted, outputs, atol=1e-4, rtol=1e-4)
    uncentered = tl.models.build("audio_cnn", channels=[8, 16], center=False)
    tl.models.materialize(uncentered, torch.zeros(2, 51, 40), 10)
    uncentered.eval()
    offset = uncentered(spectrograms + torch.linspace(-5, 5, 40))
    assert not torch.allclose(offset, uncentered(spectrograms), atol=1e-2)
    with pytest.raises(TorchloomError, match=r"takes log-mel spectrograms \(batch, frames"):
        tl.models.materialize(tl.models.build("audio_cnn"), torch.zeros(2, 1, 8, 8), 10)
    with pytest.raises(TorchloomError, match=r"model.pool: expected 'max' or 'mean'"):
        tl.models.build("audio_cnn", pool="median")


@pytest.mark.slow
def test_speech_run_beats_the_bar_on_held_out_voices_and_predicts_from_wav_files(
    speech_cache, tmp_path, capsys
):
    from torchloom.data import speech
    from torchloom.export import export

    # The example on 3 of its 5 variants, frames every 20 ms and 12 epochs, for time.
    overrides = [
        "data.variants=3", f"data.cache={speech_cache}", "data.mel={hop_length: 320}",
        "trainer.epochs=12", "trainer.progress=false", f"output.dir={tmp_path}",
        "output.name=speech",
    ]  # fmt: skip
    run = tl.fit_config("examples/speech_digits.yaml", overrides).wait()
    accuracy = run.evaluate("test")["accuracy"]
    assert accuracy >= 0.95, accuracy  # voices never heard in training
    run_dir = tmp_path / "speech"
    saved = json.loads((run_dir / "preprocess.json").read_text())
    assert saved["audio"] == {**LogMel().to_json(), "hop_length": 320}
    assert saved["standardize"]["per"] == "frequency" and len(saved["standardize"]["mean"]) == 40
    assert (run_dir / "plots" / "confusion_matrix.png").is_file()
    assert "confusion_matrix.png" in (run_dir / "report.md").read_text()
    assert "unnormalized-inputs" not in tl.doctor(str(run_dir), quiet=True).ids

    # Five test clips as files: predicted from the .wav as from the features training made.
    test_voices = set(saved["extra"]["groups"]["test"])
    made = speech.recipes(speech.DIGITS, 3)
    rows = [i for i, recipe in enumerate(made) if recipe.speaker in test_voices]  # split order
    folder = speech.folder_of(speech.DIGITS, 3, speech_cache)
    picked = [0, 17, 60, 101, len(rows) - 1]
    files = [folder / made[rows[k]].file for k in picked]
    from_files = run.predict([str(f) for f in files])
    from_features = run.predict(run.data.test.features[picked].cpu(), preprocessed=True)
    np.testing.assert_allclose(
        from_files["probabilities"], from_features["probabilities"], atol=1e-5
    )
    reloaded = tl.load_run(run_dir, data=False)
    assert reloaded.predict(files[0])["class"].tolist() == from_files["class"][:1].tolist()
    clips = tmp_path / "clips"
    clips.mkdir()
    for index, file in enumerate(files):
        (clips / f"{index}-{file.name}").write_bytes(file.read_bytes())
    capsys.readouterr()
    assert main(["predict", str(run_dir), str(clips)]) == 0
    frame = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert [Path(name).name[2:] for name in frame["file"]] == [f.name for f in files]
    classes = [run.preprocess.classes[c] for c in from_files["class"]]
    assert frame["prediction"].tolist() == classes
    assert main(["predict", str(run_dir), str(clips / os.listdir(clips)[0])]) == 0
    assert len(pd.read_csv(io.StringIO(capsys.readouterr().out))) == 1
    with pytest.raises(TorchloomError, match="it is an audio run, whose inputs are clips"):
        export(run_dir, "onnx")
