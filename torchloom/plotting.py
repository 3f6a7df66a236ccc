"""matplotlib set up for writing files, shared by every module that draws a plot.

It sits below the report, the doctor's plots and the explanations so that none of them imports
another only to reach the same setup.
"""

from __future__ import annotations


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
