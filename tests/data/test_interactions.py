"""Interaction files for sequential recommendation: formats, ordering, id remapping, k-core,
duplicates, bad input, the leave-one-out split and item-name files."""

from __future__ import annotations

import gzip

import pytest

from attnkit.data.interactions import leave_one_out, read_interactions, read_item_names
from attnkit.errors import DataError


def _original(data) -> list[list[str]]:
    """Each user's sequence in original item ids."""
    return [[data.items[i] for i in seq] for seq in data.sequences]


# ---------------------------------------------------------------------------------------- formats


def test_sasrec_text_keeps_file_order_and_dense_ids(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("1 3\n1 1\n2 2\n1 2\n\n2 4\n")
    data = read_interactions(path)
    assert data.users == ["1", "2"]
    assert data.items == ["", "1", "2", "3", "4"]  # already dense: internal id == original id
    assert data.sequences == [[3, 1, 2], [2, 4]]  # file order is the order
    assert data.n_items == 4
    assert data.n_interactions == 5
    assert data.source == str(path)
    assert data.notes == []


def test_csv_with_header_is_sorted_by_time_stably(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text(
        "user,item,rating,timestamp\n"
        "1,10,5,300\n"
        "1,500,3,100\n"
        "2,7,4,50\n"
        "1,7,4,100\n"  # ties with item 500 at t=100: file order decides
        "2,10,1,20\n"
    )
    data = read_interactions(path)
    assert data.users == ["1", "2"]
    assert data.items == ["", "7", "10", "500"]  # sparse ids -> 1..N in numeric order
    assert _original(data) == [["500", "7", "10"], ["10", "7"]]
    assert data.sequences == [[3, 1, 2], [2, 1]]


def test_csv_without_header_and_without_timestamp_keeps_file_order(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("10,500\n10,7\n3,7\n")
    data = read_interactions(path)
    assert data.users == ["3", "10"]  # numeric, not string, order
    assert data.items == ["", "7", "500"]
    assert _original(data) == [["7"], ["500", "7"]]


def test_csv_third_column_rating_is_not_a_time(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("user,item,rating\n1,10,5\n1,20,1\n1,30,3\n")
    assert _original(read_interactions(path)) == [["10", "20", "30"]]


def test_movielens_ratings_dat_sorted_by_time(tmp_path):
    path = tmp_path / "ratings.dat"
    path.write_text("1::1193::5::978300760\n1::661::3::978302109\n1::914::3::978301968\n2::1357::5::978298709\n")
    data = read_interactions(path)
    assert data.users == ["1", "2"]
    assert data.items == ["", "661", "914", "1193", "1357"]
    assert _original(data) == [["1193", "914", "661"], ["1357"]]


def test_gzip_file(tmp_path):
    path = tmp_path / "ratings.dat.gz"
    path.write_bytes(gzip.compress(b"5::20::4::2\n5::10::4::1\n"))
    data = read_interactions(path)
    assert _original(data) == [["10", "20"]]
    text = tmp_path / "data.txt.gz"
    text.write_bytes(gzip.compress(b"1 2\n1 1\n"))
    assert read_interactions(text).sequences == [[2, 1]]


# ---------------------------------------------------------------------------------------- k-core


def test_k_core_filter_repeats_until_stable(tmp_path):
    # user 1: 10 20 30 | user 2: 10 20 | user 3: 10 30 50 | user 4: 40 60 | user 5: 60 10
    # 2-core, round 1: items 40 and 50 have one user -> dropped; user 4 is left with 60 alone -> dropped.
    # Round 2: item 60 now has one user (5) -> dropped; user 5 is left with 10 alone -> dropped.
    # Round 3: items 10, 20, 30 have 3, 2, 2 users, users 1-3 have 3, 2, 2 items: stable.
    pairs = [(1, 10), (1, 20), (1, 30), (2, 10), (2, 20), (3, 10), (3, 30), (3, 50), (4, 40), (4, 60)]
    pairs += [(5, 60), (5, 10)]
    path = tmp_path / "data.txt"
    path.write_text("".join(f"{u} {i}\n" for u, i in pairs))
    data = read_interactions(path, min_count=2)
    assert data.users == ["1", "2", "3"]
    assert data.items == ["", "10", "20", "30"]  # remapped after filtering: no gaps
    assert data.sequences == [[1, 2, 3], [1, 2], [1, 3]]
    assert data.notes == ["2-core filter kept 7 of 12 interactions"]

    assert read_interactions(path, min_count=1).n_interactions == 12  # 1-core: nothing to drop
    assert read_interactions(path, min_count=0).notes == []
    with pytest.raises(DataError, match="nothing is left after the 4-core filter"):
        read_interactions(path, min_count=4)


# ---------------------------------------------------------------------------------------- duplicates


@pytest.fixture
def repeated(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("1 5\n1 6\n2 5\n1 5\n1 7\n")
    return path


def test_duplicates_are_an_error_by_default(repeated):
    with pytest.raises(DataError) as error:
        read_interactions(repeated)
    message = str(error.value)
    assert "line 4 (user 1, item 5) repeats line 1" in message
    assert "--duplicates" in message


def test_duplicates_drop_keeps_the_first(repeated):
    data = read_interactions(repeated, duplicates="drop")
    assert _original(data) == [["5", "6", "7"], ["5"]]
    assert data.notes == ["dropped 1 duplicate interactions"]


def test_duplicates_keep(repeated):
    data = read_interactions(repeated, duplicates="keep")
    assert _original(data) == [["5", "6", "5", "7"], ["5"]]
    assert data.notes == []


def test_same_item_at_different_times_is_not_a_duplicate(tmp_path):
    path = tmp_path / "ratings.dat"
    path.write_text("1::5::3::100\n1::6::3::200\n1::5::4::300\n")
    assert _original(read_interactions(path)) == [["5", "6", "5"]]


# ---------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("data.txt", "1 2\n1 3\nu7 4\n", "line 3: user id 'u7' is not a non-negative integer"),
        ("data.txt", "1 2\n1 x\n", "line 2: item id 'x' is not a non-negative integer"),
        ("data.txt", "1 2\n1 -3\n", "line 2: item id '-3'"),
        ("data.csv", "user,item\n1,2\n1,2.5\n", "line 3: item id '2.5'"),
        ("ratings.dat", "1::2::5::10\n1::abc::5::11\n", "line 2: item id 'abc'"),
        ("ratings.dat", "1::2::5::10\n1::3::5::soon\n", "line 2: timestamp 'soon' is not a finite number"),
        ("ratings.dat", "1::2::5::10\n1::3::5::nan\n", "line 2: timestamp 'nan' is not a finite number"),
        ("data.txt", "1 2\n1 ²\n", "line 2: item id '²' is not a non-negative integer"),
        ("data.txt", "1 2\n1\n", "line 2 has 1 column(s)"),
        ("data.txt", "1 2\n1 3 4\n", "line 2 has 3 columns, the first line has 2"),
    ],
)
def test_bad_lines_name_the_line(tmp_path, name, text, expected):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError) as error:
        read_interactions(path)
    assert expected in str(error.value)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("text", ["", "\n\n", "user,item,rating,timestamp\n"])
def test_empty_file(tmp_path, text):
    path = tmp_path / "data.csv"
    path.write_text(text)
    with pytest.raises(DataError, match="empty"):
        read_interactions(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_interactions(tmp_path / "nope.txt")


# ---------------------------------------------------------------------------------------- leave one out


def test_leave_one_out():
    split = leave_one_out([[1, 2, 3, 4, 5], [6, 7, 8], [9, 1], [2], []])
    assert split.train == [[1, 2, 3], [6], [9, 1], [2], []]
    assert split.valid_target == [4, 7, 0, 0, 0]
    assert split.test_target == [5, 8, 0, 0, 0]
    assert split.too_short == 3


def test_leave_one_out_copies_its_input():
    sequences = [[1, 2]]
    split = leave_one_out(sequences)
    split.train[0].append(3)
    assert sequences == [[1, 2]]


# ---------------------------------------------------------------------------------------- item names


def test_item_names_from_movielens_latin1(tmp_path):
    path = tmp_path / "movies.dat"
    path.write_bytes(
        b"1::Toy Story (1995)::Animation|Children's|Comedy\n"
        b"\n"
        b"2::Cit\xe9 des enfants perdus, La (1995)::Adventure|Sci-Fi\n"
    )
    assert read_item_names(path) == {"1": "Toy Story (1995)", "2": "Cité des enfants perdus, La (1995)"}


def test_item_names_from_tsv_and_csv(tmp_path):
    tsv = tmp_path / "names.tsv"
    tsv.write_text("007\tSkyfall\n12\tHeat, the film\nabc\tLetters\n", encoding="utf-8")
    assert read_item_names(tsv) == {"7": "Skyfall", "12": "Heat, the film", "abc": "Letters"}
    csv_file = tmp_path / "names.csv"
    csv_file.write_text('3,"Crouching Tiger, Hidden Dragon",2000\n4,Café\n', encoding="utf-8")
    assert read_item_names(csv_file) == {"3": "Crouching Tiger, Hidden Dragon", "4": "Café"}


def test_item_names_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_item_names(tmp_path / "missing.dat")
    bad = tmp_path / "names.tsv"
    bad.write_text("1\tOne\n2\n")
    with pytest.raises(DataError, match="line 2 has no name column"):
        read_item_names(bad)
