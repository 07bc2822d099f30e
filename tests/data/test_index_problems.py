"""Problems found while indexing a dataset: typed for filtering, and a configuration error only when they
are systematic."""

from __future__ import annotations

import pytest

from pipeline.errors import ConfigError


def test_index_problems_stop_the_run_only_when_they_are_systematic():
    """One bad annotation is an error row; most labels unknown is a configuration error at start."""
    from pipeline.data.records import ClassList, SampleRecord, empty_boxes
    from pipeline.sources import check_index_problems

    classes = ClassList(("n1", "n2"), ("cat", "dog"))

    def records(n_good: int, problems: list[str]) -> list[SampleRecord]:
        good = [SampleRecord(f"g{i}", "x.jpg", 0, empty_boxes()) for i in range(n_good)]
        return good + [SampleRecord(f"b{i}", "x.jpg", -1, empty_boxes(), problem=p) for i, p in enumerate(problems)]

    check_index_problems(records(57, ["unknown label fox"] * 3), classes, "voc", 0.1, 50)  # 5 %: rows in errors.parquet
    check_index_problems(records(3, ["unknown label fox"] * 2), classes, "voc", 0.1, 50)  # too few samples to judge
    with pytest.raises(ConfigError) as error:  # 17 % of 60
        check_index_problems(records(50, ["unknown label fox"] * 8 + ["bad annotation a.xml: junk"] * 2), classes, "voc", 0.1, 50)
    assert error.value.option == "data.classes" and "10 of 60" in str(error.value) and "'n1'" in str(error.value)
    with pytest.raises(ConfigError) as error:  # nothing usable at all, whatever the count
        check_index_problems(records(0, ["bad annotation a.xml: junk"] * 3), classes, "coco", 0.1, 50)
    assert error.value.option == "data.annotations"


@pytest.mark.parametrize("problem,error_type", [
    ("duplicate id 'a': b.jpg and b.png share the file stem", "DuplicateId"),
    ("duplicate file name x.jpg (also image id 3)", "DuplicateId"),
    ("file name ../x.jpg resolves outside /data (pass allow_outside_root=True to accept it)", "PathOutsideRoot"),
    ("annotation a.xml has no image", "MissingImage"),
    ("annotations refer to image id 7, which is not in 'images'", "MissingImage"),
    ("image has no annotation file", "MissingAnnotation"),
    ("image has no annotations and no label", "MissingAnnotation"),
    ("unknown or ambiguous label n999", "BadLabel"),
    ("annotations disagree (cat, dog) and the image has no label field", "BadLabel"),
    ("label index 9 out of range (3 classes)", "BadLabel"),
    ("unknown category id 12", "BadLabel"),
    ("bad annotation a.xml: mismatched tag: line 1", "BadAnnotation"),
    ("bbox [1, 2] is not [x, y, w, h]", "BadAnnotation"),
])
def test_index_problems_get_a_type_a_person_can_filter_on(problem, error_type):
    from pipeline.sources import index_problem_type

    assert index_problem_type(problem) == error_type
