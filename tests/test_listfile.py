"""List-file parsing: labels, quoting, comments, and errors that name the line."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataprep.errors import ListFileError, OnError, UsageError
from dataprep.listfile import format_line, parse_label, parse_lines, read_list


def parse(text: str, **kw):
    return parse_lines(io.StringIO(text), name="l.txt", **kw)


def test_int_and_float_labels_comments_and_blank_lines():
    entries, count = parse("# header\n\na.jpg 1\n  b.jpg 2.5\n# c.jpg 3\nc.png -4\n")
    assert count == 1
    assert [(e.line, e.path, e.labels) for e in entries] == [
        (3, "a.jpg", (1,)),
        (4, "b.jpg", (2.5,)),
        (6, "c.png", (-4,)),
    ]
    assert isinstance(entries[0].labels[0], int) and isinstance(entries[1].labels[0], float)


def test_quoted_paths_may_contain_spaces():
    entries, _ = parse('"my dir/a b.jpg" 0.5 1\nplain.jpg 1 2\n')
    assert entries[0].path == "my dir/a b.jpg" and entries[0].labels == (0.5, 1)


def test_paths_only_lists_have_zero_labels():
    entries, count = parse("a.jpg\nb.jpg\n")
    assert count == 0 and [e.labels for e in entries] == [(), ()]


@pytest.mark.parametrize(
    "text, message",
    [
        ("a.jpg 1\nb.jpg x\n", "l.txt:2: b.jpg: label 'x' is not a number"),
        ("a.jpg 1 2\nb.jpg 3\n", "l.txt:2: b.jpg: 1 labels, expected 2"),
        ("a.jpg 1\nb.jpg nan\n", "l.txt:2: b.jpg: label 'nan' is not a number"),
        ('a.jpg 1\n"b.jpg 2\n', "l.txt:2: cannot parse line"),
    ],
)
def test_errors_name_the_line(text, message):
    with pytest.raises(ListFileError) as err:
        parse(text)
    assert message in str(err.value)


def test_skip_bad_lines_counts_them():
    handler = OnError(skip=True)
    entries, _ = parse("a.jpg 1\nb.jpg x\nc.jpg 2 y\nd.jpg 4\n", on_error=handler)
    assert [e.path for e in entries] == ["a.jpg", "d.jpg"] and handler.skipped == 2


def test_one_label_lists_split_at_the_last_space_as_caffe_does():
    """convert_imageset and ImageData: line.find_last_of(' '); so does a one-label list."""
    entries, count = parse("my photos/red apples/img 03.jpg 1\nscan 2 3\nb.jpg 2\n")
    assert count == 1
    assert [(e.path, e.labels) for e in entries] == [
        ("my photos/red apples/img 03.jpg", (1,)),
        ("scan 2", (3,)),  # every field a number, but two of them in a one-label list
        ("b.jpg", (2,)),
    ]
    entries, count = parse('"my dir/a.jpg" 0.5 0.25\nb.jpg 1 2\n')  # several labels: quoted
    assert count == 2 and entries[0].path == "my dir/a.jpg"
    with pytest.raises(ListFileError, match="label 'c.jpg' is not a number"):
        parse("a.jpg 1 2\nb c.jpg 3 4\n")  # unquoted spaces in a two-label list


def test_list_lines_are_written_as_caffe_reads_them():
    assert format_line("my photos/a b.jpg", (1,)) == "my photos/a b.jpg 1"  # Caffe's form
    assert format_line("my photos/a b.jpg", (0.5, 1)) == '"my photos/a b.jpg" 0.5 1'
    assert format_line("my photos/a b.jpg") == '"my photos/a b.jpg"'
    line = format_line("a b/c d.jpg", (7,))
    assert parse(line + "\n")[0][0].path == "a b/c d.jpg"


def test_read_list_resolves_against_its_folder_and_refuses_empty(tmp_path):
    (tmp_path / "l.txt").write_text("sub/a.jpg 3\n")
    lf = read_list(tmp_path / "l.txt")
    assert lf.resolve(lf.entries[0]) == tmp_path / "sub/a.jpg" and lf.integer_labels
    (tmp_path / "e.txt").write_text("# nothing\n\n")
    with pytest.raises(ListFileError, match="e.txt: the list is empty"):
        read_list(tmp_path / "e.txt")
    with pytest.raises(UsageError, match="no such list file"):  # named on the command line
        read_list(tmp_path / "missing.txt")


label = st.one_of(st.integers(-(10**9), 10**9), st.floats(allow_nan=False, allow_infinity=False, width=64))
path = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\"'\\#"),
    min_size=1,
    max_size=20,
).filter(lambda p: p.strip() == p and p)


@given(path, st.lists(label, max_size=4))
def test_format_line_reads_back_exactly(p, labels):
    entries, _ = parse(format_line(p, labels) + "\n")
    assert entries[0].path == p and entries[0].labels == tuple(labels)


@pytest.mark.parametrize(
    "text, value",
    [
        ("5", 5),
        ("-3", -3),
        ("+7", 7),
        ("-0", 0),
        ("12345678901234567890", 12345678901234567890),
        ("0.46", 0.46),
        ("1e3", 1000.0),
        ("1.0", 1.0),
        ("0.5e-2", 0.005),
        ("-2.5", -2.5),
    ],
)
def test_labels_are_ints_only_when_written_as_integers(text, value):
    parsed = parse_label(text)
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "x", "", "0x10", "1,2"])
def test_non_numbers_and_non_finite_labels_are_refused(text):
    with pytest.raises(ValueError):
        parse_label(text)
