"""Table reading, schemas, bad-input errors, tokenization of numbers / missing values / unseen columns."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sslab.datasets.tables import (
    TableError, load_shared_table, load_sklearn_table, parse_names_codes, read_csv_table, table_from_frame,
)
from sslab.datasets.tables_tokenize import (
    MISSING, PAD, UNK, TableCollator, TableRows, TableTokenizer, TokenizedTable, number_positions, render_number,
)



@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a shared, busy CPU extra OpenMP threads spin-wait and slow everything."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def shared(shared_data) -> Path:
    return shared_data


def _write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ----------------------------------------------------------------------------- real tables


def test_adult_reads_with_comma_space_separator_and_question_marks(shared: Path) -> None:
    t = load_shared_table("adult", shared)
    assert len(t) == 32561 and len(t.schema.columns) == 14  # income is the target, not a feature
    assert int(t.frame.isna().sum().sum()) == 4262  # published count of '?' cells
    assert t.frame.loc[0, "workclass"] == "State-gov"  # no leading space left by ", "
    assert t.schema.type_of("age") == "numeric" and t.frame["age"].dtype == np.float64
    y, classes = t.labels()
    assert classes == ["<=50K", ">50K"] and t.schema.task == "binary"
    assert 0.23 < y.mean() < 0.25  # 7,841 of 32,561 earn >50K


def test_german_codes_are_decoded_from_names_file(shared: Path) -> None:
    codes = parse_names_codes(shared / "tables/german_credit/german.names")
    assert codes["A93"] == "male : single" and codes["A46"] == "education"
    t = load_shared_table("german_credit", shared)
    assert t.frame.loc[0, "personal_status_sex"] == "male : single"
    assert not t.frame["purpose"].str.match(r"^A\d+$").any()


def test_titanic_types_are_inferred_and_leak_dropped(shared: Path) -> None:
    t = load_shared_table("titanic", shared)
    types = {c.name: c.type for c in t.schema.columns}
    assert "alive" not in types and "survived" not in types
    assert types["age"] == "numeric" and types["sex"] == "categorical" and types["adult_male"] == "boolean"
    assert types["pclass"] == "categorical"  # overridden: 1/2/3 are classes
    assert int(t.frame["age"].isna().sum()) == 177 and int(t.frame["deck"].isna().sum()) == 688


def test_sklearn_bundled_tables() -> None:
    bc = load_sklearn_table("breast_cancer")
    assert len(bc) == 569 and bc.schema.task == "binary" and set(bc.target) == {"malignant", "benign"}
    dia = load_sklearn_table("diabetes")
    assert dia.schema.task == "regression" and dia.labels()[0].dtype == np.float64
    with pytest.raises(TableError, match="unknown scikit-learn table"):
        load_sklearn_table("boston")


# ----------------------------------------------------------------------------- missing markers and types


def test_missing_markers_and_type_overrides(tmp_path: Path) -> None:
    p = _write(tmp_path, "a,b,c,flag,y\n1,x,?,yes,0\nNA,y,3,no,1\n,x,5,yes,1\n2.5,?,7,,0\n")
    t = read_csv_table(p, target="y")
    assert t.frame["a"].isna().tolist() == [False, True, True, False]
    assert t.frame["b"].isna().tolist() == [False, False, False, True]
    assert {c.name: c.type for c in t.schema.columns} == {"a": "numeric", "b": "categorical", "c": "numeric",
                                                         "flag": "boolean"}
    assert t.frame["flag"].tolist() == ["true", "false", "true", None]
    t2 = read_csv_table(p, target="y", types={"c": "categorical"})
    assert t2.schema.type_of("c") == "categorical" and t2.frame["c"].tolist() == [None, "3", "5", "7"]
    with pytest.raises(TableError, match="'b'.*declared numeric.*non-numeric"):
        read_csv_table(p, target="y", types={"b": "numeric"})
    with pytest.raises(TableError, match="unknown type 'date'"):
        read_csv_table(p, target="y", types={"b": "date"})


def test_frame_input_and_subset() -> None:
    df = pd.DataFrame({"x": [1.0, None, 3.0], "k": ["a", "b", "a"], "y": [0, 1, 1]})
    t = table_from_frame(df, name="df", target="y")
    assert t.schema.names == ["x", "k"] and t.labels()[0].tolist() == [0, 1, 1]
    s = t.subset([2, 0], ["k"])
    assert s.schema.names == ["k"] and s.frame["k"].tolist() == ["a", "a"] and s.labels()[0].tolist() == [1, 0]


# ----------------------------------------------------------------------------- bad input


def test_ragged_row_names_file_and_line(tmp_path: Path) -> None:
    p = _write(tmp_path, "a,b,y\n1,2,0\n3,4,1,9\n5,6,0\n", "ragged.csv")
    with pytest.raises(TableError, match=r"ragged\.csv: ragged row at line 3: 4 fields, expected 3"):
        read_csv_table(p, target="y")


def test_all_missing_column_is_an_error(tmp_path: Path) -> None:
    p = _write(tmp_path, "a,b,y\n1,?,0\n2,NA,1\n3,,0\n", "allmiss.csv")
    with pytest.raises(TableError, match=r"allmiss\.csv.*column 'b' is missing in all 3 rows"):
        read_csv_table(p, target="y")


def test_one_class_target_is_an_error(tmp_path: Path) -> None:
    p = _write(tmp_path, "a,y\n1,yes\n2,yes\n3,yes\n", "oneclass.csv")
    with pytest.raises(TableError, match=r"oneclass\.csv.*single class \['yes'\]"):
        read_csv_table(p, target="y")


@pytest.mark.parametrize(
    "text,kwargs,pattern",
    [
        ("a,y\n1,0\n?,1\n", {"target": "z"}, r"unknown column 'z'"),
        ("a,a,y\n1,2,0\n3,4,1\n", {"target": "y"}, r"duplicate column names \['a'\]"),
        ("a,y\n1,0\n2,?\n", {"target": "y"}, r"target 'y' has 1 missing labels"),
        ("a,y\n", {"target": "y"}, r"header but no data rows"),
        ("", {}, r"no rows"),
        ("a,b\n1,2\n", {"header": ["a", "b", "c"]}, r"3 column names given but rows have 2 fields"),
    ],
)
def test_bad_inputs_get_clear_errors(tmp_path: Path, text: str, kwargs: dict, pattern: str) -> None:
    with pytest.raises(TableError, match=pattern):
        read_csv_table(_write(tmp_path, text), **kwargs)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="nope.csv: file not found"):
        read_csv_table(tmp_path / "nope.csv")


# ----------------------------------------------------------------------------- tokenization


@pytest.fixture(scope="module")
def small_tables():
    df = pd.DataFrame({
        "age": [39, 50, 38, None, 83, 7.25],
        "workclass": ["State-gov", "Private", "Private", None, "Self-emp", "Private"],
        "hours_per_week": [40, 13, 40, 45, 60, 20],
        "y": ["a", "b", "a", "b", "a", "b"],
    })
    t = table_from_frame(df, name="toy", target="y")
    return [t], TableTokenizer.train([t], vocab_size=300)


def test_render_number_fixed_significant_digits() -> None:
    assert render_number(215646.0) == "215600"
    assert render_number(7.25) == "7.25"
    assert render_number(0.000123456) == "0.0001235"
    assert render_number(-3.0) == "-3"
    assert render_number(0.0) == "0"
    assert render_number(1e9) == "1000000000"  # positional, never scientific
    with pytest.raises(ValueError):
        render_number(float("nan"))


def test_digit_place_value_positions() -> None:
    assert number_positions("38") == [17, 16]
    assert number_positions("7.25") == [16, 0, 15, 14]
    assert number_positions("-0.5") == [0, 16, 0, 15]
    # the same digit '5' at the same place value gets the same position in 5, 15 and 0.5's neighbours
    assert number_positions("15")[1] == number_positions("5")[0] == 16


def test_numbers_are_digit_tokens(small_tables) -> None:
    _, tok = small_tables
    ids38, pos38 = tok.encode_number(38)
    ids83, pos83 = tok.encode_number(83)
    assert len(ids38) == 2 and ids38 == ids83[::-1] and pos38 == pos83
    assert [tok.tok.id_to_token(i) for i in tok.encode_number(-7.25)[0]] == ["-", "7", ".", "2", "5"]


def test_missing_and_unknown_tokens(small_tables) -> None:
    _, tok = small_tables
    assert tok.encode_value(None, "categorical") == ([MISSING], [0])
    assert tok.encode_value(float("nan"), "numeric") == ([MISSING], [0])
    # a column name never seen in training is split into known sub-words / characters, not [UNK]
    ids = tok.encode_texts(["embark_town"], 8)[0]
    assert ids and UNK not in ids and PAD not in ids
    # a character outside the training alphabet becomes [UNK] rather than being dropped
    assert UNK in tok.encode_texts(["日本"], 8)[0]


def test_tokenizer_roundtrip(small_tables) -> None:
    _, tok = small_tables
    tok2 = TableTokenizer.from_str(tok.to_str())
    assert tok2.vocab_size == tok.vocab_size
    assert tok2.encode_texts(["hours per week", "Private"], 8) == tok.encode_texts(["hours per week", "Private"], 8)


def test_tokenized_table_arrays(small_tables) -> None:
    (t,), tok = small_tables
    tt = TokenizedTable(t, tok)
    assert tt.value_ids.shape == (6, 3, 12) and tt.name_ids.shape == (3, 8)
    assert tt.value_ids[3, 0, 0] == MISSING and not tt.num_valid[3, 0] and tt.num_valid[:, 2].all()
    z = tt.num_z[:, 2]
    assert abs(float(z.mean())) < 1e-5 and abs(float(z.std(unbiased=False)) - 1) < 1e-4
    assert (tt.num_z[:, 1] == 0).all()  # categorical column: no numeric target


def test_collator_mask_and_view_statistics(small_tables) -> None:
    (t,), tok = small_tables
    wide = table_from_frame(pd.DataFrame({f"c{i}": np.arange(40.0) * (i + 1) for i in range(10)}), name="wide")
    rows = TableRows([TokenizedTable(t, tok), TokenizedTable(wide, tok)])
    coll = TableCollator(mask_ratio=0.3, n_views=2, view_ratio=0.6)
    torch.manual_seed(0)
    batch = coll([rows[i] for i in range(len(rows))])
    cm, m = batch["cell_mask"], batch["mask"]
    assert cm.shape == (46, 10) and cm[:6].sum(1).eq(3).all() and cm[6:].all()
    assert not (m & ~cm).any()  # padding is never masked
    assert m[:6].sum(1).eq(1).all()  # round(0.3*3)=1
    assert m[6:].sum(1).eq(3).all()  # round(0.3*10)=3
    v = batch["views"]
    assert v.shape == (2, 46, 10) and not (v & ~cm).any() and v[:, 6:].sum(2).eq(6).all()
    assert ((v[0] & v[1]).sum(1) >= 1).all()  # 2 of 3 and 6 of 10 per view must overlap
    # each cell is masked about 30% of the time across many draws
    torch.manual_seed(1)
    rate = torch.stack([coll([rows[i] for i in range(6, 46)])["mask"].float().mean() for _ in range(20)]).mean()
    assert abs(float(rate) - 0.3) < 1e-6
