"""engine.config_cli: a config Struct as flags, a --config file and help, and back as the Struct."""

from __future__ import annotations

import argparse
from typing import Annotated, Any, Literal

import msgspec
import pytest

from engine.config_cli import ConfigCLI, describe, doc
from engine.errors import UserInputError


class Knobs(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, doc("what it is called")]
    count: Annotated[int, doc("how many, 100% of them", ge=1)] = 3
    ratio: Annotated[float | None, doc("a share")] = None
    fast: Annotated[bool, doc("go fast")] = True
    mode: Annotated[Literal["a", "b"], doc("the mode")] = "a"
    tags: Annotated[list[str], doc("labels")] = []
    sizes: Annotated[list[int], doc("sizes")] = msgspec.field(default_factory=lambda: [1, 2])
    options: Annotated[dict[str, Any], doc("extra options")] = {}


def _parse(argv: list[str], **kw: Any) -> tuple[ConfigCLI, argparse.Namespace]:
    cli = ConfigCLI(Knobs, section="knobs", **kw)
    parser = argparse.ArgumentParser(prog="magnet knobs")
    cli.add_arguments(parser)
    return cli, parser.parse_args(argv)


def test_one_flag_per_field_with_its_help_and_default():
    cli = ConfigCLI(Knobs)
    parser = argparse.ArgumentParser(prog="magnet knobs")
    cli.add_arguments(parser)
    text = " ".join(parser.format_help().split())
    for piece in ("--config FILE.toml", "--name NAME what it is called (required)", "--count COUNT how many, 100% of them (default: 3)",
                  "--ratio RATIO a share (default: null)", "--fast, --no-fast go fast (default: true)", "--mode {a,b}",
                  "--tags TAGS [TAGS ...]", "--sizes SIZES [SIZES ...] sizes (default: [1,2])", "--option KEY=VALUE extra options"):
        assert piece in text
    assert describe(Knobs).splitlines()[1] == "count: how many, 100% of them (default: 3)"
    assert len(describe(Knobs).splitlines()) == len(Knobs.__struct_fields__)


def test_bool_literal_list_and_dict_flags():
    cli, args = _parse(["--name", "x", "--no-fast", "--mode", "b", "--tags", "p", "q,r", "--tags", "s", "--sizes", "4, 5",
                        "--option", "k=1", "--option", "s=text", "--option", "j={\"a\": [1]}", "--ratio", "0.5"])
    config = cli.load(args)
    assert (config.fast, config.mode, config.tags, config.sizes, config.ratio) == (False, "b", ["p", "q", "r", "s"], [4, 5], 0.5)
    assert config.options == {"k": 1, "s": "text", "j": {"a": [1]}}
    assert cli.flag_values(args).keys() == {"name", "fast", "mode", "tags", "sizes", "options", "ratio"}
    assert cli.load(_parse(["--name", "x"])[1]) == Knobs(name="x")  # nothing given: the defaults
    with pytest.raises(SystemExit):
        _parse(["--name", "x", "--mode", "c"])
    with pytest.raises(SystemExit):
        _parse(["--name", "x", "--sizes", "4,five"])


def test_positional_and_renamed_flags():
    cli, args = _parse(["x", "--n", "4"], positional=("name",), flags={"count": "--n"})
    assert cli.load(args) == Knobs(name="x", count=4)


def test_config_file_flat_or_in_its_section_and_flags_override(tmp_path):
    flat = tmp_path / "flat.toml"
    flat.write_text('name = "f"\ncount = 5\ntags = ["t"]\n[options]\na = 1\nb = 1\n')
    cli, args = _parse(["--config", str(flat), "--count", "7", "--option", "b=2"])
    assert cli.load(args) == Knobs(name="f", count=7, tags=["t"], options={"a": 1, "b": 2})  # dicts merge key by key
    both = tmp_path / "both.toml"
    both.write_text('[knobs]\nname = "k"\ncount = 9\n[other]\nname = "o"\n')
    assert cli.load(_parse(["--config", str(both)])[1]) == Knobs(name="k", count=9)
    as_json = tmp_path / "k.json"
    as_json.write_text('{"name": "j", "mode": "b"}')
    assert cli.load(_parse(["--config", str(as_json), "--mode", "a"])[1]) == Knobs(name="j", mode="a")


@pytest.mark.parametrize(("argv", "toml", "message"), [
    (["--name", "x", "--count", "0"], None, "--count (count in --config) 0: Expected `int` >= 1; give a valid value (see `magnet knobs --help`)"),
    ([], "name = 'x'\ncount = 'many'\n", "--count (count in --config) 'many': Expected `int`, got `str`"),
    ([], "name = 'x'\nzzz = 1\n", "magnet knobs --config: unknown option 'zzz'; valid ones are name, count,"),
    ([], "count = 2\n", "--name (name in --config) is required: what it is called"),
    ([], "name = [\n", "is not valid TOML"),
    (["--name", "x", "--option", "oops"], None, "--option 'oops' is not KEY=VALUE; give one KEY=VALUE per --option"),
])
def test_bad_value_is_one_line_naming_the_field_and_the_fix(tmp_path, argv, toml, message):
    if toml is not None:
        (tmp_path / "c.toml").write_text(toml)
        argv = [*argv, "--config", str(tmp_path / "c.toml")]
    cli, args = _parse(argv)
    with pytest.raises(UserInputError) as err:
        cli.load(args)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_config_file_is_named():
    cli, args = _parse(["--config", "nope.toml"])
    with pytest.raises(UserInputError, match=r"--config nope.toml cannot be read \(it does not exist\)"):
        cli.load(args)
