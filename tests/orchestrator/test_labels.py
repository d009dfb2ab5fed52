"""Run labels as a person gives them: checked keys and values, the engine's own refused,
and a bound on their size."""

import pytest

from infra import SpecError
from orchestrator import check_labels, parse_pairs


def test_good_labels_are_text():
    assert check_labels({"experiment": "try1", "n": 3, "on": True}) == {
        "experiment": "try1", "n": "3", "on": "true",
    }  # fmt: skip


@pytest.mark.parametrize(
    "labels, message",
    [
        ({"Bad": "x"}, "label key 'Bad'"),
        ({"shadow": "true"}, "set by the engine"),
        ({"rollout": "a@2"}, "set by the engine"),
        ({"k": "a\nb"}, "no control characters"),
        ({"k": "x" * 201}, "at most 200"),
        ({"k": {"nested": 1}}, "short text value"),
        ({f"k{i}": "v" for i in range(17)}, "at most 16 labels"),
        ({f"k{i}": "v" * 100 for i in range(12)}, "at most 1024 bytes"),
    ],
)
def test_bad_labels_are_one_line(labels, message):
    with pytest.raises(SpecError, match=message) as caught:
        check_labels(labels, "labels")
    assert len(caught.value.problems) == 1 and "\n" not in str(caught.value.problems[0])


def test_filters_may_name_the_engines_labels():
    assert parse_pairs(["shadow:true", "arm:candidate"], ":") == {
        "shadow": "true", "arm": "candidate",
    }  # fmt: skip
    with pytest.raises(SpecError, match="is not KEY=VALUE"):
        parse_pairs(["novalue"])
