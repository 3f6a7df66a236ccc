"""`fit()`'s keyword options, derived from the config schema: one keyword per field, so an
option is declared once (in `torchloom.config`, with its description)."""

from __future__ import annotations

from pydantic import BaseModel

from torchloom.config import Config, section_class

# Sections fit() takes whole, as a mapping or a bare name, with the field a bare name sets
# (`optimizer="adam"`, `init="xavier_uniform"`). Their fields get no keyword of their own:
# `name`, `lr` or `std` alone would not say which section they belong to.
FIT_SECTIONS: dict[str, str | None] = {
    "init": "scheme",
    "loss": "name",
    "optimizer": "name",
    "scheduler": "name",
    "transfer": None,
}
# Keywords that are not their field's own name: `dir` alone would not say what it is.
FIT_KEYWORDS: dict[tuple[str, ...], str] = {("output", "dir"): "output_dir"}
_LOADING = (
    "`fit()` is given its data already loaded; these fields say how a source is read "
    "(`torchloom.data.load`, or `fit_config`)"
)
# The fields fit() has no keyword for, and why. Every other field has one, and a test fails
# when a field is in neither (tests/test_options.py).
NOT_FIT_OPTIONS: dict[tuple[str, ...], str] = {
    ("model",): "`fit()` is given the model itself: a module, or a zoo name",
    ("search",): "`torchloom tune`'s search space; training ignores it",
    ("env",): "agents train from a config: `torchloom train` or `torchloom.rl.train(config)`",
    ("data", "name"): _LOADING,
    ("data", "path"): _LOADING,
    ("data", "target"): _LOADING,
    ("data", "standardize"): _LOADING,
    ("data", "missing"): _LOADING,
    ("data", "stream"): _LOADING,
    ("data", "seed"): "`fit()` splits plain arrays and datasets with `seed` (`trainer.seed`)",
}


def fit_options() -> dict[str, tuple[str, ...]]:
    """`fit()`'s keyword options, each with the config path it sets, derived from the schema.

    A section in `FIT_SECTIONS` is one keyword; every field of the other sections is one, named
    as the field (or as `FIT_KEYWORDS` says); `NOT_FIT_OPTIONS` lists the fields left out.

    Example:
        >>> options = fit_options()
        >>> options["epochs"], options["output_dir"], options["optimizer"]
        (('trainer', 'epochs'), ('output', 'dir'), ('optimizer',))
    """
    paths: list[tuple[str, ...]] = []
    for name, field in Config.model_fields.items():
        section = section_class(field.annotation)
        if section is None or name in FIT_SECTIONS:
            paths.append((name,))
        else:
            paths += [(name, inner) for inner in section.model_fields]
    options: dict[str, tuple[str, ...]] = {}
    for path in paths:
        if path in NOT_FIT_OPTIONS or path[:1] in NOT_FIT_OPTIONS:
            continue
        keyword = FIT_KEYWORDS.get(path, path[-1])
        assert keyword not in options, f"fit() keyword {keyword!r}: {options[keyword]} and {path}"
        options[keyword] = path
    return options


def section_at(path: str) -> type[BaseModel]:
    """The schema class of the section at a dotted path: `section_at("trainer.early_stopping")`
    is `EarlyStoppingConfig`, `section_at("")` is `Config`."""
    model: type[BaseModel] = Config
    for part in path.split(".") if path else ():
        inner = section_class(model.model_fields[part].annotation)
        if inner is None:
            raise ValueError(f"{path}: '{part}' is a field of {model.__name__}, not a section")
        model = inner
    return model
