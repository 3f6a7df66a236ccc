"""matplotlib set up for writing files, shared by every module that draws a plot.

It sits below the report, the doctor's plots and the explanations so that none of them imports
another only to reach the same setup.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

# matplotlib is not thread-safe (its mathtext parser, for one, is shared): a run's report drawn
# on its background thread and a second run finishing in the same process would draw at once.
# Everything torchloom draws holds this lock while it draws and saves.
DRAWING = threading.RLock()


def drawing(function):
    """`function`, run holding `DRAWING`."""

    @functools.wraps(function)
    def holding(*args, **kwargs):
        with DRAWING:
            return function(*args, **kwargs)

    return holding


# What Agg writes that a person opens as a picture; the file name's suffix picks the format.
PLOT_FORMATS = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def plot_path(path: str | Path, option: str) -> Path:
    """`path` as a plot to write, checked before any work is done for it.

    Raises:
        TorchloomError: a suffix that is no picture format, or a folder that does not exist.
    """
    from torchloom.errors import TorchloomError

    path = Path(path)
    if path.suffix.lower() not in PLOT_FORMATS:
        raise TorchloomError(
            f"{option} {path}: expected a picture file name ending in "
            f"{', '.join(PLOT_FORMATS)}; got '{path.suffix or 'no suffix'}'. Name it e.g. plot.png."
        )
    if not path.parent.is_dir():
        raise TorchloomError(f"{option} {path}: no folder {path.parent}; create it first.")
    return path


def pyplot():
    """`matplotlib.pyplot` on the Agg backend: plots go to files and no display is needed.

    Imported on first use, so importing a module that can plot does not import matplotlib.

    Returns:
        The `matplotlib.pyplot` module.

    Example:
        >>> plt = pyplot()
        >>> figure, axes = plt.subplots()
        >>> plt.close(figure)
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure(**options):
    """A new `matplotlib.figure.Figure`, drawn by Agg when saved, outside pyplot's global state:
    the run's report is drawn on a background thread, beside whatever pyplot the user's own code
    drives. No `close` is needed; it is freed like any object.

    Args:
        **options: `Figure` options (`figsize`, ...).

    Example:
        >>> chart = figure(figsize=(6, 4))
        >>> axes = chart.subplots()
    """
    from matplotlib.figure import Figure

    return Figure(**options)


def colormap(name: str):
    """The registered matplotlib colormap `name` (e.g. "viridis")."""
    import matplotlib

    return matplotlib.colormaps[name]
