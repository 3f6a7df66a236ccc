"""`speech_digits`: spoken words rendered by two speech synthesizers, held out by voice.

    data: {name: speech_digits}                 # 'zero' ... 'nine', 52 voices, 2,600 clips
    data: {name: speech_digits, split: engine}  # train on espeak-ng voices, test on flite's

No recorded speech corpus can be downloaded here, so the clips are made on first use by two
independent synthesizers from Debian: espeak-ng (a formant synthesizer: 8 English accents x 6
voice variants) and flite (CMU's diphone voice kal16 and statistical voices awb, rms, slt), each
word said by each voice `variants` times at a random rate and pitch, sped up or slowed down a bit,
placed at a random offset in a 1 s clip and mixed with white, pink or brown noise from sox at a
random signal-to-noise ratio (or none). Every draw is seeded by the clip's voice, word and
variant number, so rendering is the same on every machine with the same engines, and the clips
are written once into a cache folder (`data.cache`, else `$TORCHLOOM_CACHE`, else
`$XDG_CACHE_HOME/torchloom` or `~/.cache/torchloom`) that is itself an `audio_folder`, with a
`manifest.json` of what made each clip, written last.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from torchloom.data.audio import LogMel, clips_table, fit_length, resample, soundfile_module
from torchloom.data.tabular import Table
from torchloom.errors import DataError

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ESPEAK_ACCENTS = (
    "en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
    "en-029", "en-us-nyc",
)  # fmt: skip
ESPEAK_VARIANTS = ("m1", "m3", "m7", "f2", "f4", "klatt3")
FLITE_VOICES = ("awb", "kal16", "rms", "slt")
VOICES = [("espeak-ng", f"{a}+{v}") for a in ESPEAK_ACCENTS for v in ESPEAK_VARIANTS] + [
    ("flite", voice) for voice in FLITE_VOICES
]
PROGRAMS = {"espeak-ng": "espeak-ng", "flite": "flite", "sox": "sox"}  # program -> apt package
NOISES = ("whitenoise", "pinknoise", "brownnoise")
SNRS = (None, 20.0, 15.0, 10.0, 5.0)  # dB; None: no noise
SAMPLE_RATE = 16000
SECONDS = 1.0
# Bump when any step of rendering changes: the cache folder's name holds it, so old clips are
# never mistaken for new ones.
RENDER_VERSION = 1
SPLITS = ("voice", "engine")


@dataclass(frozen=True)
class Recipe:
    """How one clip is made: who says which word, how fast and high, with what noise."""

    engine: str
    voice: str
    word: str
    variant: int
    rate: float  # espeak-ng: words per minute; flite: duration stretch (above 1 is slower)
    pitch: int  # espeak-ng's 0..99 pitch; flite: the voice's own
    speed: int  # resampled by speed / 50 (pitch and tempo together): 45..55
    noise: str
    snr: float | None
    offset: float  # where the word starts in the clip, as a share of the room left
    peak: float  # the word's peak amplitude before the noise

    @property
    def file(self) -> str:
        """`<word>/<voice>__<variant>.wav`: the speaker is the name's part before `__`."""
        voice = f"{self.engine}_{self.voice}".replace("+", "_")
        return f"{self.word}/{voice}__{self.variant}.wav"

    @property
    def speaker(self) -> str:
        return f"{self.engine}/{self.voice}"


def recipes(words: tuple[str, ...], variants: int) -> list[Recipe]:
    """Every clip of the data set, voices in `VOICES` order (espeak-ng's, then flite's)."""
    made = []
    for engine, voice in VOICES:
        for word in words:
            for variant in range(variants):
                # Seeded by names, not positions: a clip is the same whatever else is rendered.
                key = [RENDER_VERSION, zlib.crc32(f"{engine}/{voice}/{word}".encode()), variant]
                draw = np.random.default_rng(np.random.SeedSequence(key))
                espeak = engine == "espeak-ng"
                # The draws' order is part of the data set: rate first, then the keywords below.
                rate = (
                    float(draw.integers(130, 231)) if espeak else round(draw.uniform(0.8, 1.25), 3)
                )
                made.append(
                    Recipe(
                        engine=engine,
                        voice=voice,
                        word=word,
                        variant=variant,
                        rate=rate,
                        pitch=int(draw.integers(25, 76)) if espeak else 0,
                        speed=int(draw.integers(45, 56)),
                        noise=NOISES[int(draw.integers(len(NOISES)))],
                        snr=SNRS[int(draw.integers(len(SNRS)))],
                        offset=round(float(draw.uniform()), 4),
                        peak=round(float(draw.uniform(0.3, 0.9)), 3),
                    )
                )
    return made


def speech_digits(
    words: list[str] | None = None,
    variants: int = 5,
    split: str = "voice",
    cache: str | None = None,
    mel: dict | None = None,
) -> Table:
    """Spoken words from espeak-ng and flite voices, rendered once into a cache folder.

    Args:
        words: the words to say, one class each; default 'zero' ... 'nine'.
        variants: clips of each word by each of the 52 voices (rate, pitch, speed, noise and
            offset drawn anew for each).
        split: "voice": val and test hold out whole voices (fractions of each engine's
            voices), so no test voice is heard in training; "engine": the test split is every
            flite clip and training hears espeak-ng voices only (val holds out espeak-ng
            voices), the generalization to another synthesizer.
        cache: the folder to render into (see the module's docstring for the default).
        mel: the log-mel spectrogram's parameters (see `torchloom.data.audio.LogMel`).

    Raises:
        DataError: bad options, or a synthesizer missing when the clips must be rendered (the
            message names the apt package).
    """
    words_ = check_words(words)
    if isinstance(variants, bool) or not isinstance(variants, int) or variants < 1:
        raise DataError(f"data.variants: expected a whole number >= 1, got {variants!r}.")
    if split not in SPLITS:
        raise DataError(
            f"data.split: expected 'voice' (held-out voices) or 'engine' (train on espeak-ng, "
            f"test on flite), got {split!r}."
        )
    features = LogMel.from_options(SAMPLE_RATE, SECONDS, mel)
    folder = rendered(words_, variants, cache_root(cache))
    made = recipes(words_, variants)
    files = [(folder / recipe.file, words_.index(recipe.word)) for recipe in made]
    groups = np.asarray([recipe.speaker for recipe in made])
    engines = np.asarray([recipe.engine for recipe in made])  # each engine's share held out
    flite = int(np.flatnonzero(engines == "flite")[0])
    return clips_table(
        files, list(words_), features, "speech_digits", groups,
        test_start=flite if split == "engine" else None, group_kinds=engines,
    )  # fmt: skip


def check_words(words) -> tuple[str, ...]:
    if words is None:
        return DIGITS
    fine = (
        isinstance(words, list | tuple)
        and len(words) >= 2
        and all(isinstance(w, str) and w.isalpha() and w.islower() for w in words)
        and len(set(words)) == len(words)
    )
    if not fine:
        raise DataError(
            f"data.words: expected at least two different lowercase words of letters only, "
            f"e.g. [yes, no, up, down], got {words!r}."
        )
    return tuple(words)


def cache_root(cache: str | None) -> Path:
    """Where rendered data sets live: `cache`, $TORCHLOOM_CACHE, or the user's cache folder."""
    if cache is not None:
        return Path(cache).expanduser()
    if os.environ.get("TORCHLOOM_CACHE"):
        return Path(os.environ["TORCHLOOM_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "torchloom"


def folder_of(words: tuple[str, ...], variants: int, root: Path) -> Path:
    """Where the clips of `words` x `variants` live under the cache `root`: named by a hash of
    everything that decides what is rendered."""
    recipe = {"version": RENDER_VERSION, "words": words, "variants": variants, "voices": VOICES}
    digest = hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:12]
    return root / "speech_digits" / f"v{RENDER_VERSION}-{digest}"


def rendered(words: tuple[str, ...], variants: int, root: Path) -> Path:
    """The folder holding these clips, rendered now unless a complete one is there."""
    folder = folder_of(words, variants, root)
    if (folder / "manifest.json").is_file():  # written last: the folder is complete
        return folder
    check_programs()
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(
            f"data.cache: cannot create {folder.parent} ({error.strerror}). Set data.cache (or "
            "$TORCHLOOM_CACHE) to a folder you can write."
        ) from None
    staging = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        render(recipes(words, variants), staging)
        try:
            staging.rename(folder)
        except OSError:  # another process finished the same folder first: keep its clips
            if not (folder / "manifest.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def check_programs() -> None:
    """Raise one `DataError` naming every synthesizer missing from PATH and its apt package."""
    missing = [program for program in PROGRAMS if shutil.which(program) is None]
    if missing:
        packages = " ".join(PROGRAMS[program] for program in missing)
        raise DataError(
            f"data source 'speech_digits' renders its clips on first use with espeak-ng, flite "
            f"and sox, and {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not "
            f"installed (not on PATH). Install with: apt-get install -y {packages} (or set "
            "data.cache to a folder rendered before)."
        )


def render(made: list[Recipe], folder: Path) -> None:
    """Write every clip of `made` under `folder`, then `manifest.json`."""
    scratch = folder / ".scratch"
    scratch.mkdir(parents=True)
    for word in dict.fromkeys(recipe.word for recipe in made):
        (folder / word).mkdir()
    noises = {noise: noise_track(noise, scratch) for noise in NOISES}
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:  # the engines run as processes: threads suffice
        list(pool.map(lambda recipe: render_clip(recipe, folder, scratch, noises), made))
    shutil.rmtree(scratch)
    manifest = {
        "version": RENDER_VERSION,
        "sample_rate": SAMPLE_RATE,
        "seconds": SECONDS,
        "engines": {program: program_version(program) for program in PROGRAMS},
        "clips": [
            {"file": recipe.file, "speaker": recipe.speaker, **asdict(recipe)} for recipe in made
        ],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def noise_track(noise: str, scratch: Path, seconds: int = 20) -> np.ndarray:
    """`seconds` of sox's `noise` at the clips' rate, zero mean and unit RMS. `sox -R` seeds
    its generator with a fixed number, so the track is the same on every run."""
    path = scratch / f"{noise}.wav"
    run([
        "sox", "-R", "-n", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(path), "synth",
        str(seconds), noise,
    ])  # fmt: skip
    track, _ = soundfile_module().read(str(path), dtype="float64")
    track = track - track.mean()
    return track / np.sqrt(np.mean(track**2))


def render_clip(recipe: Recipe, folder: Path, scratch: Path, noises: dict) -> None:
    """Say the word, resample, speed, trim, place, mix in noise, write `folder/recipe.file`."""
    raw = scratch / recipe.file.replace("/", "-")
    if recipe.engine == "espeak-ng":
        command = ["espeak-ng", "-v", recipe.voice, "-s", str(int(recipe.rate))]
        command += ["-p", str(recipe.pitch), "-w", str(raw), recipe.word]
    else:
        command = ["flite", "-voice", recipe.voice, "--setf", f"duration_stretch={recipe.rate}"]
        command += ["-t", recipe.word, "-o", str(raw)]
    run(command)
    soundfile = soundfile_module()
    wave, rate = soundfile.read(str(raw), dtype="float64")
    raw.unlink()
    wave = resample(wave, rate, SAMPLE_RATE).astype(np.float64)
    wave = resample(wave, SAMPLE_RATE * recipe.speed // 50, SAMPLE_RATE).astype(np.float64)
    word = trim(wave)
    samples = int(SAMPLE_RATE * SECONDS)
    word = word[:samples] * (recipe.peak / max(np.abs(word).max(), 1e-9))
    start = int(recipe.offset * (samples - len(word)))
    clip = np.zeros(samples)
    clip[start : start + len(word)] = word
    if recipe.snr is not None:
        track = noises[recipe.noise]
        at = zlib.crc32(recipe.file.encode()) % (len(track) - samples)
        loudness = np.sqrt(np.mean(word**2)) / 10 ** (recipe.snr / 20)
        clip += loudness * track[at : at + samples]
    clip /= max(1.0, np.abs(clip).max() / 0.99)  # no clipping in 16-bit PCM
    soundfile.write(str(folder / recipe.file), fit_length(clip, samples), SAMPLE_RATE, "PCM_16")


def trim(wave: np.ndarray, floor_db: float = -35.0, frame: int = 160) -> np.ndarray:
    """`wave` from its first to its last 10 ms frame within `floor_db` of its loudest one."""
    frames = len(wave) // frame
    if frames == 0:
        return wave
    energy = np.sqrt(np.mean(wave[: frames * frame].reshape(frames, frame) ** 2, axis=1))
    loud = np.flatnonzero(energy >= energy.max() * 10 ** (floor_db / 20))
    return wave[loud[0] * frame : (loud[-1] + 1) * frame]


def run(command: list[str]) -> None:
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=60)
    except subprocess.CalledProcessError as error:
        said = " ".join(error.stderr.decode(errors="replace").split())[:300]
        raise DataError(
            f"speech_digits: `{' '.join(command)}` failed (exit {error.returncode}): {said}"
        ) from None


def program_version(program: str) -> str:
    """The line of `program --version` that names its version (for the manifest)."""
    done = subprocess.run([program, "--version"], capture_output=True, text=True, timeout=30)
    lines = (done.stdout + done.stderr).strip().splitlines()
    named = [line for line in lines if "version" in line.lower() or "text-to-speech" in line]
    return (named or lines or [""])[0].split("  Data at")[0].strip()
