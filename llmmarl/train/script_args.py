"""The command line of a training script: its config file, ``--set`` overrides, one ``--smoke``, flags that alias keys.

A reference script (``scripts/train_*.py``) states its run once, in its config file (``configs/train_kuhn.yaml``):
the :class:`TrainConfig` keys it chooses (every other key keeps TrainConfig's default), the same file that
``llmmarl train`` runs. The command line changes it in layers, later ones winning:

    config file  <  --smoke's sizes  <  alias flags given  <  the script's own flags  <  --output-dir  <  --set

An alias flag is shorthand for one config key (``--lr 2e-4`` is ``--set learning_rate=2e-4``); they are declared
once, in :data:`ALIASES`, with their help taken from the field's description. They keep the commands quoted in
docs/results.md, reports/ and adapters/manifest.json working. ``--help`` prints the config file's run, so a
script's defaults are stated in one visible place.

    parser = ScriptParser(__doc__, "configs/train_ttt.yaml", aliases=["--model", "--lr"], smoke={"eval_games": 8})
    parser.add_argument("--opponent", choices=["random", "self"], default="random")   # the script's own flags
    args = parser.parse_args()
    cfg = TrainConfig.model_validate(parser.config(args, {"opponents": [args.opponent]}))
"""

from __future__ import annotations

import argparse
import copy
import re
import shutil
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

import llmmarl.train
from llmmarl.config_overrides import OverrideError, apply_overrides, set_key
from llmmarl.train.config import TrainConfig
from llmmarl.train.registry import algorithms, lookup

if TYPE_CHECKING:
    from llmmarl.train.loop import MultiAgentTrainer

_VALUE: Any = object()  # Alias.const when the flag takes a value
_METAVARS: dict[Any, str] = {int: "N", float: "X"}


@dataclass(frozen=True)
class Alias:
    """A flag that sets one config key: ``--lr 2e-4`` sets ``learning_rate``; a switch sets it to ``const``."""

    flag: str
    key: str  # dotted TrainConfig key, e.g. grpo.warmup_updates
    const: Any = _VALUE  # a switch (no value on the command line): --no-reask sets reask to False
    type: Callable[[str], Any] | None = None  # default: the field's type
    choices: Sequence[Any] | None = None  # default: the field's Literal values
    help: str | None = None  # default: the field description's first sentence


#: Every alias flag of the reference scripts, flag -> config key. A script picks the ones it takes.
ALIASES: dict[str, Alias] = {
    a.flag: a
    for a in (
        Alias("--model", "model"),
        Alias("--steps", "steps"),
        Alias("--budget", "steps", help="Same as --steps."),
        Alias("--games-per-update", "games_per_update"),
        Alias("--group-size", "group_size"),
        Alias("--credit", "grpo.credit"),
        Alias("--lr", "learning_rate"),
        Alias("--steps-per-update", "grpo.steps_per_update"),
        Alias("--grpo-steps", "grpo.steps_per_update"),
        Alias("--warmup", "grpo.warmup_updates", help="Format warm-up updates (constrained, imitated) before GRPO."),
        Alias("--critic-lr", "ppo.critic_lr"),
        Alias("--minutes", "time_budget_minutes"),
        Alias("--no-reask", "reask", const=False),
        Alias("--constrained", "constrained", const=True),
        Alias("--max-new-tokens", "max_new_tokens"),
        Alias("--max-samples", "max_samples_per_learner"),
        Alias("--prediction-weight", "rewards.prediction"),
        Alias("--message-cost", "rewards.message"),
        Alias("--eval-games", "eval_games"),
        Alias("--threads", "threads"),
        Alias("--seed", "seed"),
    )
}

#: What every script's --smoke does first: a tiny budget (2 updates of 4 games, short answers), then its own sizes.
SMOKE: dict[str, Any] = {"steps": 2, "games_per_update": 4, "group_size": 2, "max_new_tokens": 32}

# Flags that continue a run: a smoke run keeps its folder for them, and starts afresh otherwise.
_CONTINUES = ("resume", "eval_only")
# The file a --smoke run leaves in its output folder: the mark that a later --smoke run may delete that folder.
SMOKE_MARKER = ".llmmarl-smoke"


class SmokeFolderError(ValueError):
    """--smoke was pointed at a folder that no smoke run made."""


def fresh_smoke_folder(folder: Path) -> None:
    """Empty ``folder`` for a smoke run and mark it as one's: only a folder that a smoke run made (it holds
    :data:`SMOKE_MARKER`), or an empty one, is deleted. Anything else (a real run that ``--output-dir`` or
    ``--set output_dir=`` named, with its checkpoints) is refused with :class:`SmokeFolderError`, untouched."""
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise SmokeFolderError(f"--smoke: output folder {folder} is not a plain folder; name a new one")
    if folder.exists():
        if not (folder / SMOKE_MARKER).is_file() and any(folder.iterdir()):
            raise SmokeFolderError(
                f"--smoke starts afresh by deleting its output folder, but {folder} was not made by a smoke run (it "
                f"has no {SMOKE_MARKER}): nothing was deleted. Name a new folder with --output-dir, or add --resume."
            )
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / SMOKE_MARKER).write_text("Made by a --smoke run: the next --smoke run deletes this folder.\n")


class ScriptParser(argparse.ArgumentParser):
    """An argument parser that builds a script's config dict from its recipe and the command line (see the module).

    ``recipe``: the script's run, as TrainConfig keys (``output_dir`` included): the path of a YAML config file, or
    the keys themselves. ``aliases``: the alias flags it
    takes, names from :data:`ALIASES` (a list, or one string of them) or its own :class:`Alias`. ``smoke``: its
    sizes on top of :data:`SMOKE`. ``output_flag``: the flag naming the output folder. ``resume_flag``: add
    ``--resume`` (without it the script always resumes, and ``--smoke`` keeps the folder).
    """

    def __init__(
        self,
        doc: str | None,
        recipe: str | Path | Mapping[str, Any],
        *,
        aliases: str | Sequence[str | Alias],
        smoke: Mapping[str, Any] | None = None,
        output_flag: str = "--output-dir",
        resume_flag: bool = True,
    ) -> None:
        self.source = None if isinstance(recipe, Mapping) else Path(recipe)
        self.recipe = copy.deepcopy(dict(recipe)) if isinstance(recipe, Mapping) else read_recipe(Path(recipe))
        self.smoke = {**SMOKE, **(smoke or {})}
        names = aliases.split() if isinstance(aliases, str) else aliases
        self.aliases = [ALIASES[a] if isinstance(a, str) else a for a in names]
        self.resume_flag = resume_flag
        super().__init__(description=doc, epilog=self._epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
        for alias in self.aliases:
            self._add_alias(alias)
        self.add_argument(
            output_flag,
            dest="output_dir",
            default=None,
            help=f"Output folder (default: {self.recipe.get('output_dir')}, plus -smoke under --smoke).",
        )
        self.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="Change any config key, applied last: --set temperature=0.8, --set grpo.beta=0.01 (repeatable).",
        )
        smoke_sizes = ", ".join(f"{k}={yaml_value(v)}" for k, v in self.smoke.items())
        self.add_argument("--smoke", action="store_true", help=f"Tiny budget ({smoke_sizes}); flags given win.")
        if resume_flag:
            self.add_argument("--resume", action="store_true", help="Continue from the newest checkpoint.")

    # ---- the config ---------------------------------------------------------------------------------------------
    def config(self, args: argparse.Namespace, changes: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The run's config dict: the recipe, --smoke's sizes, the alias flags given, the script's ``changes``
        (dotted keys, from its own flags), the output folder, then --set. Under --smoke the output folder is emptied
        first, unless the run is continued (--resume, --eval-only) or the script always resumes."""
        data = copy.deepcopy(self.recipe)
        layers = [
            self.smoke if args.smoke else {},
            {a.key: getattr(args, _dest(a)) for a in self.aliases if hasattr(args, _dest(a))},
            changes or {},
        ]
        for layer in layers:
            for key, value in layer.items():
                set_key(data, key, copy.deepcopy(value))
        if args.output_dir:
            data["output_dir"] = args.output_dir
        elif args.smoke:
            data["output_dir"] = f"{data.get('output_dir') or self.default_of('output_dir')}-smoke"
        try:
            data = apply_overrides(data, args.overrides)
        except OverrideError as e:
            self.error(str(e))
        continued = any(getattr(args, flag, False) for flag in _CONTINUES)
        if args.smoke and self.resume_flag and not continued:
            try:
                fresh_smoke_folder(Path(data["output_dir"]))  # a smoke run always starts afresh
            except SmokeFolderError as e:
                self.error(str(e))
        return data

    def validate(self, data: Mapping[str, Any]) -> TrainConfig:
        """``data`` as a TrainConfig; a value it rejects ends the script with the parser's usage and the reason."""
        try:
            return TrainConfig.model_validate(data)
        except ValidationError as e:
            reasons = "; ".join(
                f"{'.'.join(map(str, err['loc'])) or 'config'}: {_reason(err['msg'])}" for err in e.errors()
            )
            self.error(f"the run's config is not valid: {reasons}")

    def train(self, cfg: TrainConfig, resume: bool = False) -> MultiAgentTrainer:
        """``cfg`` trained to the end by the library's run (:func:`llmmarl.train.train`: the trainer of its
        ``algorithm``, resumed if asked, its engine closed after). A folder that already holds checkpoints, without
        ``--resume``, ends the script with the parser's usage and the reason."""
        try:
            return llmmarl.train.train(cfg, resume=resume)
        except FileExistsError as e:
            self.error(str(e))

    # ---- help ---------------------------------------------------------------------------------------------------
    def _add_alias(self, alias: Alias) -> None:
        info = field_info(alias.key)
        if alias.const is not _VALUE:
            self.add_argument(
                alias.flag,
                dest=_dest(alias),
                action="store_const",
                const=alias.const,
                default=argparse.SUPPRESS,
                help=f"Sets {alias.key}: {yaml_value(alias.const)}. {_help(alias, info)}",
            )
            return
        kind, choices = _value_type(info)
        kind = alias.type or kind or str
        choices = list(alias.choices) if alias.choices else choices
        smoke = f", --smoke {yaml_value(self.smoke[alias.key])}" if alias.key in self.smoke else ""
        self.add_argument(
            alias.flag,
            dest=_dest(alias),
            type=kind,
            choices=choices,
            default=argparse.SUPPRESS,
            metavar=None if choices else _METAVARS.get(kind, alias.flag.lstrip("-").upper()),
            help=f"{alias.key} (default {yaml_value(self.default_of(alias.key))}{smoke}): {_help(alias, info)}",
        )

    def default_of(self, key: str) -> Any:
        """``key``'s value before flags: the recipe's, else TrainConfig's default (None where there is none)."""
        node: Any = self.recipe
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                info = field_info(key)
                if info is None or info.is_required():
                    return None
                return info.get_default(call_default_factory=True)
            node = node[part]
        return node

    def _epilog(self) -> str:
        recipe = yaml.safe_dump(self.recipe, sort_keys=False, default_flow_style=None, width=100)
        indented = "\n".join(f"  {line}" for line in recipe.splitlines())
        source = f", {self.source.name}" if self.source else ""
        return (
            f"The run before any flag{source} (the keys not listed keep their defaults in TrainConfig,\n"
            f"llmmarl/train/config.py, where every key is described):\n{indented}"
        )


def read_recipe(path: Path) -> dict[str, Any]:
    """The config keys in the YAML file ``path``; a missing or malformed file ends the script with the reason."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise SystemExit(f"cannot read the run's config file {path}: {e}") from e
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: expected a mapping of config keys at the top level")
    return data


def field_info(key: str) -> FieldInfo | None:
    """The TrainConfig field behind a dotted key (``grpo.credit``), or None for a key without a schema."""
    model: type[BaseModel] | None = TrainConfig
    info: FieldInfo | None = None
    head, _, rest = key.partition(".")
    if head in algorithms() and rest:  # an algorithm's settings block: its own model
        model, key = lookup(head).settings, rest
    for part in key.split("."):
        if model is None or part not in model.model_fields:
            return None
        info = model.model_fields[part]
        model = next((t for t in _members(info.annotation) if _is_model(t)), None)
    return info


def yaml_value(value: Any) -> str:
    """A value as it would be written in the YAML config (``false``, ``null``, ``0.0001``)."""
    return str(yaml.safe_dump(value, default_flow_style=True, width=1000)).removesuffix("\n...\n").strip()


def _reason(message: str) -> str:
    return message.removeprefix("Value error, ")  # pydantic's prefix for a validator's ValueError


def _dest(alias: Alias) -> str:
    return f"config:{alias.flag}"


def _help(alias: Alias, info: FieldInfo | None) -> str:
    if alias.help:
        return alias.help
    text = (info.description if info else None) or ""
    first = re.split(r"(?<!e\.g)\.(?:\s|$)", text, maxsplit=1)[0]
    if len(first) > 160:  # a long first sentence: its head, up to the first colon or semicolon
        first = re.split(r"[:;]\s", first, maxsplit=1)[0]
    return first.rstrip(".") + "."


def _members(annotation: Any) -> tuple[Any, ...]:
    """``int | None`` -> ``(int, NoneType)``; any other annotation -> itself."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return typing.get_args(annotation)
    return (annotation,)


def _is_model(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel)


def _value_type(info: FieldInfo | None) -> tuple[Callable[[str], Any] | None, list[Any] | None]:
    """The argparse ``type`` and ``choices`` of a field: its scalar type, or its Literal's values."""
    for t in _members(info.annotation if info else None):
        if typing.get_origin(t) is Literal:
            values = list(typing.get_args(t))
            return type(values[0]), values
        if t in (int, float, str):
            return t, None
    return None, None
