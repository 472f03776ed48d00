"""The compiled scorer against fastText itself, on real models trained here from TweetEval subsets."""

from __future__ import annotations

import contextlib
import random
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from schemas import LABELS
from sentiment_model import ModelCannotExplainError, ModelLoadError, Predictor, linear_scorer, normalize
from sentiment_model.linear_scorer import LinearScorer, UnsupportedModelError
from sentiment_model.model_file import read_model_file
from training.data import Dataset, load_split
from training.fasttext_train import fit, labelled_lines, project_onto_labels, quantize, training_file

TOLERANCE = 1e-5
WORD_ONLY = {"epoch": 8, "lr": 0.5, "minCount": 1, "minn": 0, "maxn": 0}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, train_subset: Dataset) -> dict[str, Path]:
    """The models under test, trained once from the first 6,000 train rows."""
    folder = tmp_path_factory.mktemp("linear-scorer")
    paths: dict[str, Path] = {}
    with training_file(labelled_lines(train_subset)) as train_file:
        # Like the published recipe: ova, words + bigrams, 1M buckets, projected to dim 3, quantized with
        # dsub 1 and no norm quantization; a 20,000-row cutoff prunes almost every bigram bucket.
        params = {**WORD_ONLY, "dim": 20, "wordNgrams": 2, "bucket": 1_000_000, "loss": "ova"}
        model = fit(train_file, params, threads=1)
        projected = project_onto_labels(model, folder / "recipe-projected.bin")
        quantize(projected, train_file, {"cutoff": 20_000, "retrain": False, "qnorm": False, "dsub": 1}, 1)
        paths["recipe"] = folder / "recipe.ftz"
        projected.save_model(str(paths["recipe"]))
        # Unquantized softmax with word trigrams: every bucket has a row.
        params = {**WORD_ONLY, "dim": 10, "wordNgrams": 3, "bucket": 100_000, "loss": "softmax"}
        paths["softmax"] = folder / "softmax.bin"
        fit(train_file, params, threads=1).save_model(str(paths["softmax"]))
        # Char n-grams: the compiled scorer must decline and fastText score.
        params = {**WORD_ONLY, "dim": 10, "wordNgrams": 2, "bucket": 100_000, "minn": 2, "maxn": 4}
        paths["char"] = folder / "char.bin"
        fit(train_file, params, threads=1).save_model(str(paths["char"]))
    return paths


@pytest.fixture(scope="module")
def predictors(trained: dict[str, Path]) -> dict[str, Predictor]:
    return {name: Predictor.load(path) for name, path in trained.items()}


@pytest.fixture(scope="module")
def references(trained: dict[str, Path]) -> dict[str, Predictor]:
    """The same files scored by fastText's own predict."""
    return {name: Predictor.load_fasttext(path) for name, path in trained.items()}


@pytest.fixture(scope="module")
def tweeteval_lines(data_dir: Path) -> list[str]:
    """Every TweetEval sentiment text (train, val, test: 59,899), normalised."""
    texts = [text for split in ("train", "val", "test") for text in load_split(split, data_dir).texts]
    return [normalize(text) for text in texts]


def assert_same_as_fasttext(predictor: Predictor, reference: Predictor, lines: list[str]) -> None:
    assert reference.scorer_name == "fasttext"
    ours = predictor.predict_normalized(lines).probabilities
    theirs = reference.predict_normalized(lines).probabilities
    gap = np.abs(ours - theirs).max(axis=1)
    worst = int(gap.argmax())
    assert gap[worst] <= TOLERANCE, f"{lines[worst]!r}: ours {ours[worst]} fastText {theirs[worst]}"
    differ = np.flatnonzero(ours.argmax(axis=1) != theirs.argmax(axis=1))
    assert differ.size == 0, [lines[i] for i in differ[:5]]


@pytest.mark.parametrize("name", ["recipe", "softmax"])
def test_word_models_are_scored_by_the_compiled_kernel(predictors: dict[str, Predictor], name: str) -> None:
    predictor = predictors[name]
    assert linear_scorer._fastlinear is not None, "sentiment_model._fastlinear is not built"
    assert predictor.scorer_name == "c", predictor.scorer_reason
    assert isinstance(predictor.scorer, LinearScorer)
    assert predictor.scorer.loss == ("ova" if name == "recipe" else "softmax")


def test_char_ngram_model_falls_back_to_fasttext(predictors: dict[str, Predictor]) -> None:
    predictor = predictors["char"]
    assert predictor.scorer_name == "fasttext"
    assert "char n-grams" in predictor.scorer_reason
    batch = predictor.predict(["I love this phone", "worst service ever"])
    assert np.allclose(batch.probabilities.sum(axis=1), 1.0)
    with pytest.raises(ModelCannotExplainError, match="char n-grams"):
        predictor.explain_normalized("i love it")


def test_the_recipe_model_is_pruned(trained: dict[str, Path]) -> None:
    scorer = LinearScorer.from_file(trained["recipe"])
    _, counts = scorer.row_sums(["i love this phone , best purchase ever"])
    # 9 tokens + </s>: 9 bigrams exist, far fewer survive a 20,000-row cutoff out of 1,000,000 buckets.
    assert counts[0] < 10 + 9


@pytest.mark.parametrize("name", ["recipe", "softmax"])
def test_same_as_fasttext_on_all_of_tweeteval(
    predictors: dict[str, Predictor], references: dict[str, Predictor], tweeteval_lines: list[str], name: str
) -> None:
    assert len(tweeteval_lines) == 59_899
    assert_same_as_fasttext(predictors[name], references[name], tweeteval_lines)


def _fuzz(count: int, vocabulary: list[str], seed: int) -> Iterator[str]:
    """Seeded strings: known words, unseen unicode, label-prefix tokens, punctuation runs, fastText's
    other separators, literal ``</s>``, very long texts, blanks."""
    rng = random.Random(seed)
    alphabets = [
        "abcdefghijklmnopqrstuvwxyz",
        "!?.,;:'\"#@$%&*()[]{}<>/\\|-_+=~^`",
        "éüñçßøåæœ",
        "ÄÖÜ€£¥©®™°±µ¶§",
        "абвгдежзийклмнопрстуфхцчшщъыьэюя",
        "的一是不了人我在有他这中大来上",
        "😀😂😍😭😡👍🔥💯🙏🎉",
        "\u0301\u200b\u200d\ufe0f",  # combining, zero-width, variation selector
    ]
    separators = [" ", " ", " ", "  ", "\t", "\v", "\f", "\r", "\x00", "\u00a0", "\u2028", "\u3000"]
    specials = ["</s>", "__label__positive", "__label__neutral", "__label__x", "__label__", "__lexneg__"]
    for i in range(count):
        kind = rng.random()
        if kind < 0.02:
            yield rng.choice(["", " ", "\t", "\x00", "   \r "])
            continue
        n_tokens = rng.randint(300, 800) if kind < 0.024 else rng.randint(1, 30)
        tokens = []
        for _ in range(n_tokens):
            pick = rng.random()
            if pick < 0.55:
                tokens.append(rng.choice(vocabulary))
            elif pick < 0.65:
                tokens.append(rng.choice(specials) + (rng.choice(vocabulary) if rng.random() < 0.3 else ""))
            elif pick < 0.7:
                tokens.append("".join(rng.choice(alphabets[1]) for _ in range(rng.randint(1, 6))))
            else:
                alphabet = rng.choice(alphabets)
                length = rng.randint(1, 300) if rng.random() < 0.02 else rng.randint(1, 12)
                tokens.append("".join(rng.choice(alphabet) for _ in range(length)))
        text = "".join(token + rng.choice(separators) for token in tokens)
        yield text if i % 2 else normalize(text)


def test_a_lone_surrogate_is_scored_from_its_bytes(predictors: dict[str, Predictor]) -> None:
    """A str without a UTF-8 form (a lone surrogate, e.g. from a JSON escape) is read as its surrogatepass
    bytes: an unknown word like any other, its hash still feeding the n-grams."""
    scorer = predictors["softmax"].scorer
    assert isinstance(scorer, LinearScorer)
    lines = ["good day", "bad \ud800 day", "\udfff", "the worst service"]
    sums, counts = scorer.row_sums(lines)
    as_bytes = [line.encode("utf-8", "surrogatepass") for line in lines]
    alone = [scorer.row_sums([line]) for line in lines]
    assert counts.tolist() == [c[0] for _, c in alone]
    assert counts.tolist()[1:3] == [3 + 3 + 2, 1 + 1]  # as an unknown word: bad, day, </s> and n-grams
    assert np.isfinite(scorer.fasttext_probabilities(lines)).all()
    assert np.array_equal(scorer.row_sums(lines[1:2])[0], sums[1:2])
    assert as_bytes[1] == b"bad \xed\xa0\x80 day"
    assert predictors["softmax"].explain_normalized(lines[1]).tokens
    assert predictors["softmax"].oov_counts(lines[1:3]) == (2, 4)
    with pytest.raises(TypeError):  # neither str nor bytes: a clear error
        scorer.row_sums(["good", 3])  # type: ignore[list-item]


def test_scores_with_fasttext_without_the_compiled_kernel(
    trained: dict[str, Path],
    references: dict[str, Predictor],
    tweeteval_lines: list[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setattr(linear_scorer, "_fastlinear", None)
    predictor = Predictor.load(trained["recipe"])
    assert predictor.scorer_name == "fasttext" and "not built" in predictor.scorer_reason
    lines = tweeteval_lines[:3_000]
    expected = references["recipe"].predict_normalized(lines).probabilities
    assert np.array_equal(predictor.predict_normalized(lines).probabilities, expected)
    with pytest.raises(UnsupportedModelError, match="not built"):
        LinearScorer.from_file(trained["recipe"])
    truncated = tmp_path / "truncated.ftz"  # still read and refused here, never handed to fastText
    truncated.write_bytes(trained["recipe"].read_bytes()[:-100])
    with pytest.raises(ModelLoadError, match="truncated or corrupt"):
        Predictor.load(truncated)


@pytest.mark.parametrize("name", ["recipe", "softmax"])
def test_same_as_fasttext_on_fuzzed_strings(
    predictors: dict[str, Predictor], references: dict[str, Predictor], name: str
) -> None:
    predictor = predictors[name]
    vocabulary = sorted(word.decode() for word in read_model_file(predictor.path).words)
    lines = list(_fuzz(50_000, vocabulary, seed=7 if name == "recipe" else 8))
    assert sum(len(line.split()) > 300 for line in lines) > 100  # long lines take their own path
    for start in range(0, len(lines), 5_000):  # batches of a realistic size, not one huge call
        assert_same_as_fasttext(predictor, references[name], lines[start : start + 5_000])


def test_label_prefix_tokens_are_not_words(
    predictors: dict[str, Predictor], references: dict[str, Predictor]
) -> None:
    predictor = predictors["softmax"]
    scorer = predictor.scorer
    assert isinstance(scorer, LinearScorer)
    lines = [
        "good day",
        "good __label__positive day",  # a known label
        "good __label__whatever day",  # an unknown one: still a label, not a word
        "__label__ good day",
        "good day __label__negative",
    ]
    assert_same_as_fasttext(predictor, references["softmax"], lines)
    probabilities = predictor.predict_normalized(lines).probabilities
    assert np.allclose(probabilities, probabilities[0], atol=1e-7)  # the bigram "good day" survives
    # good, day, </s> and their 3 n-grams, whatever label tokens sit between them
    assert scorer.row_sums(lines)[1].tolist() == [3 + 3] * len(lines)
    assert predictor.oov_counts(lines) == (0, 2 * len(lines))  # labels are not tokens


def test_unknown_word_still_feeds_word_ngrams(
    predictors: dict[str, Predictor], references: dict[str, Predictor]
) -> None:
    predictor = predictors["softmax"]
    scorer = predictor.scorer
    assert isinstance(scorer, LinearScorer)
    unknown = "zzqxunseenword"
    assert unknown.encode() not in read_model_file(predictor.path).words
    lines = ["good day", f"good {unknown} day", f"{unknown}", f"good {unknown}"]
    assert_same_as_fasttext(predictor, references["softmax"], lines)
    # words good, day, </s> (the unknown one adds no row); trigram model, 4 word tokens: 3 + 2 + 1 n-grams.
    counts = scorer.row_sums(lines)[1].tolist()
    assert counts[1:3] == [3 + 3 + 2, 1 + 1]  # </s>, and the bigram with </s>
    assert predictor.oov_counts(lines) == references["softmax"].oov_counts(lines) == (3, 8)
    ours = predictor.predict_normalized(lines).probabilities
    assert not np.allclose(ours[0], ours[1])  # its n-grams changed the scores


def test_separators_and_literal_end_token(
    predictors: dict[str, Predictor], references: dict[str, Predictor]
) -> None:
    predictor = predictors["recipe"]
    lines = ["", "good\tday", "good\x00day\r", "good day </s> awful awful", "</s>", "good\vday\f"]
    assert_same_as_fasttext(predictor, references["recipe"], lines)
    probabilities = predictor.predict_normalized(lines).probabilities
    assert np.allclose(probabilities[1], probabilities[2]) and np.allclose(probabilities[1], probabilities[5])
    assert np.allclose(probabilities[3], predictor.predict_normalized(["good day"]).probabilities[0])


def test_a_batch_scores_each_line_as_alone(
    predictors: dict[str, Predictor], tweeteval_lines: list[str]
) -> None:
    scorer = predictors["recipe"].scorer
    assert isinstance(scorer, LinearScorer)
    lines = tweeteval_lines[:300]
    sums, counts = scorer.row_sums(lines)
    for i in (0, 17, 299):
        alone_sums, alone_counts = scorer.row_sums([lines[i]])
        assert alone_counts[0] == counts[i] and np.array_equal(alone_sums[0], sums[i])


@pytest.mark.parametrize("name", ["recipe", "softmax"])
def test_explanations_add_up_to_the_scores(
    predictors: dict[str, Predictor], tweeteval_lines: list[str], name: str
) -> None:
    predictor = predictors[name]
    scorer = predictor.scorer
    assert isinstance(scorer, LinearScorer)
    lines = tweeteval_lines[1_000:2_000]
    logits, has_rows = scorer.logits(lines)
    distributions = predictor.predict_normalized(lines).probabilities
    for i, line in enumerate(lines):
        explanation = predictor.explain_normalized(line)
        total = np.sum([contribution for _, contribution in explanation.tokens], axis=0)
        assert np.allclose(total, explanation.logits, atol=TOLERANCE, rtol=0)
        assert np.allclose(explanation.logits, logits[i], atol=TOLERANCE, rtol=0)
        reported = scorer.scores_from_logits(np.array([explanation.logits], dtype=np.float32))[0]
        assert np.allclose(reported / reported.sum(), distributions[i], atol=TOLERANCE)
        names = [token for token, _ in explanation.tokens]
        assert len(names) == len(set(names))
        assert bool(has_rows[i])


def test_a_strong_negative_word_explains_a_negative_text(predictors: dict[str, Predictor]) -> None:
    predictor = predictors["recipe"]
    line = normalize("The weather today is worst")
    assert predictor.predict_normalized([line]).labels == ["negative"]
    tokens = predictor.explain_normalized(line).tokens
    negative = LABELS.index("negative")
    top = max(tokens, key=lambda item: item[1][negative])[0]
    assert "worst" in top or top == "__lexneg__", tokens


def test_truncated_or_corrupt_files_raise_model_load_error(trained: dict[str, Path], tmp_path: Path) -> None:
    for name in ("recipe", "softmax"):
        data = trained[name].read_bytes()
        rng = random.Random(0)
        cuts = [0, 3, 8, 40, 60, 61, *(rng.randrange(len(data)) for _ in range(40)), len(data) - 1]
        for cut in cuts:
            path = tmp_path / f"{name}-{cut}.bin"
            path.write_bytes(data[:cut])
            with pytest.raises(ModelLoadError):
                LinearScorer.from_file(path)
        padded = tmp_path / f"{name}-padded.bin"
        padded.write_bytes(data + b"\0" * 16)
        with pytest.raises(ModelLoadError, match="bytes after"):
            LinearScorer.from_file(padded)
        # Random damage in the header and dictionary: a clear error, a decline, or a model — no crash.
        for trial in range(120 if name == "recipe" else 20):
            damaged = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                damaged[rng.randrange(min(len(data), 4_000))] = rng.randrange(256)
            path = tmp_path / f"{name}-damaged-{trial}.bin"
            path.write_bytes(bytes(damaged))
            with contextlib.suppress(ModelLoadError, UnsupportedModelError):
                LinearScorer.from_file(path).fasttext_probabilities(["good day"])


def test_declines_what_it_cannot_reproduce(trained: dict[str, Path], tmp_path: Path) -> None:
    data = trained["softmax"].read_bytes()

    def with_arg(index: int, value: int) -> Path:  # the 12 int32 arguments follow magic and version
        changed = bytearray(data)
        struct.pack_into("<i", changed, 8 + 4 * index, value)
        path = tmp_path / f"arg-{index}-{value}.bin"
        path.write_bytes(bytes(changed))
        return path

    for index, value, reason in [(6, 1, "loss"), (6, 2, "loss"), (10, 3, "char")]:
        with pytest.raises(UnsupportedModelError, match=reason):
            LinearScorer.from_file(with_arg(index, value))
    with pytest.raises(ModelLoadError, match="not a classifier"):
        LinearScorer.from_file(with_arg(7, 1))
    version = bytearray(data)
    struct.pack_into("<i", version, 4, 13)
    (tmp_path / "v13.bin").write_bytes(bytes(version))
    with pytest.raises(ModelLoadError, match="version"):
        LinearScorer.from_file(tmp_path / "v13.bin")
    with pytest.raises(ModelLoadError, match="not a fastText model"):
        (tmp_path / "text.bin").write_bytes(b"not a model\n" * 50)
        LinearScorer.from_file(tmp_path / "text.bin")


def test_a_file_fasttext_must_score_is_checked_whole_first(trained: dict[str, Path], tmp_path: Path) -> None:
    """The compiled scorer declines a char n-gram model only once the whole file is known complete: fastText
    never loads a truncated one."""
    data = trained["char"].read_bytes()
    with pytest.raises(UnsupportedModelError, match="char n-grams"):
        LinearScorer.from_file(trained["char"])
    for cut in (100, len(data) // 2, len(data) - 1):
        path = tmp_path / f"char-{cut}.bin"
        path.write_bytes(data[:cut])
        with pytest.raises(ModelLoadError, match="truncated or corrupt"):
            Predictor.load(path)


def test_word_pulls_are_the_explanations_negative_minus_positive(
    predictors: dict[str, Predictor], tweeteval_lines: list[str]
) -> None:
    """The crisis terms' pulls (worker) come from the same contributions as the API's explanations."""
    scorer = predictors["recipe"].scorer
    assert isinstance(scorer, LinearScorer)
    lines = [*tweeteval_lines[:300], "", "unseenwordxyz only", "worst worst service"]
    per_line = scorer.word_pulls(lines).lines()
    assert len(per_line) == len(lines)
    negative, positive = LABELS.index("negative"), LABELS.index("positive")
    for line, (words, pull) in zip(lines, per_line, strict=True):
        assert len(words) == len(pull)
        explained: dict[str, float] = {}
        for token, contribution in scorer.explain(line).tokens:
            if " " not in token:  # word n-grams are not words
                explained[token] = contribution[negative] - contribution[positive]
        summed: dict[str, float] = {}
        for word, value in zip(words, pull.tolist(), strict=True):
            assert word in line.split() or word == "</s>"
            summed[word] = summed.get(word, 0.0) + value
        assert summed.keys() == explained.keys()
        for word, value in summed.items():
            assert value == pytest.approx(explained[word], abs=1e-5), (line, word)
