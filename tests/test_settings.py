"""Numeric settings: one reader, clear errors naming the variable."""

from __future__ import annotations

import pytest

from dgx_spark.settings import env_float, env_int, env_number, load_settings


def test_unset_gives_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DGX_SPARK_X", raising=False)
    assert env_number("DGX_SPARK_X", None, 0, 1) is None
    assert env_float("DGX_SPARK_X", 2.5, 0, 10) == 2.5
    assert env_int("DGX_SPARK_X", 7, 0, 10) == 7


@pytest.mark.parametrize("raw", ["abc", "nan", "inf", "-1", "11", "1e999"])
def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("DGX_SPARK_X", raw)
    with pytest.raises(ValueError, match="DGX_SPARK_X"):
        env_float("DGX_SPARK_X", 1.0, 0, 10)


def test_whole_numbers_only_where_they_must_be(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DGX_SPARK_X", "2.5")
    with pytest.raises(ValueError, match="whole number"):
        env_int("DGX_SPARK_X", 1, 0, 10)
    monkeypatch.setenv("DGX_SPARK_X", " 4 ")
    assert env_int("DGX_SPARK_X", 1, 0, 10) == 4


def test_settings_read_port_and_refresh(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("DGX_SPARK_PORT", "3123")
    monkeypatch.setenv("DGX_SPARK_REFRESH_SECONDS", "0.5")
    monkeypatch.setenv("DGX_SPARK_DATA_DIR", str(tmp_path))
    loaded = load_settings()
    assert (loaded.port, loaded.refresh_seconds, loaded.data_dir) == (3123, 0.5, tmp_path.resolve())
    assert loaded.db_url == f"sqlite:///{tmp_path.resolve() / 'dgx_spark.db'}"
    monkeypatch.setenv("DGX_SPARK_PORT", "70000")
    with pytest.raises(ValueError, match="DGX_SPARK_PORT"):
        load_settings()
