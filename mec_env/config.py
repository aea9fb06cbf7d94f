"""Scenario configuration: typed dataclasses, loaded from YAML and validated.

The defaults are the paper scenario (the paper's Table II; docs/model.md): ``ScenarioConfig()`` equals
``load_scenario("paper")``. Units are SI: Hz, W, W/Hz, FLOP, FLOP/s, m. Every field carries
``help`` and, where it has one, an allowed range or a set of choices in its metadata; the
loader rejects unknown keys, wrong types and out-of-range values with an error that names
the field, the value and what is allowed.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from importlib import resources
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

import yaml

from mec_env.errors import ConfigError, short_repr
from mec_env.radio import FADING, INTERFERENCE_MODELS, PATH_LOSS

def packaged_configs(kind: str) -> dict[str, Any]:
    """The YAML configs shipped in the package under ``mec_env/configs/{kind}``, by name.

    They are package data (found through ``importlib.resources``), so they load the same from a
    checkout, an editable install or a wheel, whatever the working directory; the checkout's
    top-level ``configs/`` is a link to them.
    """
    folder = resources.files("mec_env").joinpath("configs", kind)
    if not folder.is_dir():
        return {}
    return {f.name.rsplit(".", 1)[0]: f for f in folder.iterdir() if f.name.endswith((".yaml", ".yml"))}


def read_config_file(name_or_path: str | Path, kind: str) -> tuple[Any, str]:
    """``(document, where)`` of a packaged config by name (``"paper"``) or of a YAML file by path."""
    path = Path(name_or_path)
    if path.suffix:
        if not path.is_file():
            raise ConfigError(kind, str(name_or_path), "an existing YAML path or one of "
                              + ", ".join(sorted(packaged_configs(kind))))
        return read_yaml(path), str(path)
    known = packaged_configs(kind)
    if str(name_or_path) not in known:
        raise ConfigError(kind, str(name_or_path), "a YAML path or one of " + ", ".join(sorted(known)))
    with resources.as_file(known[str(name_or_path)]) as packaged:
        return read_yaml(packaged), f"{name_or_path} (mec_env/configs/{kind})"


def config_data(cls: type, path: str | Path | None, overrides: Iterable[str], kind: str = "train") -> dict[str, Any]:
    """The mapping a ``cls`` config is built from: a YAML document (:func:`read_config_file`) with
    ``key=value`` overrides on top; ``env_kwargs.NAME=VALUE`` changes one environment argument."""
    data: dict[str, Any] = {}
    if path is not None:
        data, where = read_config_file(path, kind)
        if not isinstance(data, Mapping):
            raise ConfigError(where, type(data).__name__, "a YAML mapping")
    for key, value in parse_key_values(overrides).items():
        if key.startswith("env_kwargs."):
            base = data.get("env_kwargs", cls().env_kwargs)
            if not isinstance(base, Mapping):
                raise ConfigError("env_kwargs", base, "a mapping of environment arguments")
            data["env_kwargs"] = {**base, key.split(".", 1)[1]: value}
        else:
            data[key] = value
    return data


def config_field(default: Any = dataclasses.MISSING, help: str = "", range: tuple[float, float] | None = None,
                 choices: tuple | None = None, open_low: bool = False, check: Callable[[Any], str | None] | None = None,
                 default_factory: Callable[[], Any] | None = None, nested: type | None = None):
    """A config dataclass field with the metadata the validator reads.

    :param help: one line for docs and error messages.
    :param range: allowed ``(low, high)``; ``open_low`` excludes ``low``.
    :param choices: the allowed values.
    :param check: ``check(value)`` returns None when the value is fine, else what is allowed.
    :param default_factory: for list and dict defaults (a mutable default is refused).
    :param nested: the config class of a nested mapping (built and validated by it).
    """
    meta: dict[str, Any] = {"help": help}
    if range is not None:
        meta["range"] = range
        meta["open_low"] = open_low
    if choices is not None:
        meta["choices"] = choices
    if check is not None:
        meta["check"] = check
    if nested is not None:
        meta["nested"] = nested
    if isinstance(default, (list, dict)):
        raise TypeError("mutable defaults are not allowed; use default_factory")
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def inherited_field(base: type, name: str, default: Any):
    """Field ``name`` of the config dataclass ``base`` (its help, range, choices) with another ``default``: a
    subclass changes a default without restating the rest (a list or dict default is copied per instance)."""
    meta = base.__dataclass_fields__[name].metadata
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


_f = config_field


INF = math.inf
FLOAT32_MAX = float(np.finfo(np.float32).max)  # the largest bound a float32 observation Box can have


@dataclass(frozen=True)
class QueryConfig:
    """Where per-user queries (uncertainty, correctness, prompt size) come from.

    ``traces`` (default): rows of a trace table from real SLM/LLM inference on bAbI test
    questions (``mec_env/traces.py``), drawn uniformly with replacement; ``metric`` picks the
    SLM uncertainty used as alpha. The ``alpha_*``/``*_acc_*``/``metric_noise`` fields below
    belong to the synthetic source only.

    ``synthetic``: prompt sizes drawn from the real bAbI test prompts (shipped table), margin
    uncertainty ``alpha ~ Beta(alpha_beta_a, alpha_beta_b)``, and correctness from a shared
    uniform ``u``: ``slm_correct = u < slm_acc(alpha)``, ``llm_correct = u < llm_acc(alpha)``,
    with ``acc(alpha) = clip(intercept + slope * alpha, 0, 1)`` (a comonotone coupling: an
    easier question is easier for both models). Entropy and perplexity uncertainties are the
    margin plus Gaussian noise of std ``metric_noise``, clipped to [0, 1].
    """

    source: str = _f("traces", "query source: real LM traces or the synthetic model", choices=("traces", "synthetic"))
    trace_path: str = _f("", "trace table CSV; empty = the shipped mec_env/data/traces_babi.csv")
    metric: str = _f("margin", "uncertainty metric used as alpha", choices=("margin", "entropy", "perplexity"))
    alpha_beta_a: float = _f(2.0, "Beta shape a of synthetic alpha", range=(0.0, INF), open_low=True)
    alpha_beta_b: float = _f(1.3, "Beta shape b of synthetic alpha", range=(0.0, INF), open_low=True)
    slm_acc_intercept: float = _f(0.935, "SLM accuracy at alpha = 0", range=(0.0, 1.0))
    slm_acc_slope: float = _f(-0.8, "SLM accuracy change per unit alpha", range=(-1.0, 1.0))
    llm_acc_intercept: float = _f(0.925, "LLM accuracy at alpha = 0", range=(0.0, 1.0))
    llm_acc_slope: float = _f(-0.6, "LLM accuracy change per unit alpha", range=(-1.0, 1.0))
    metric_noise: float = _f(0.05, "std of entropy/perplexity noise around the margin", range=(0.0, 1.0))

    def __post_init__(self) -> None:
        validate(self, "queries")


@dataclass(frozen=True)
class ScenarioConfig:
    """A MEC scenario. Defaults are the paper's reference settings (its Table II; docs/model.md)."""

    name: str = _f("paper", "scenario name")
    n_users: int = _f(120, "number of users N", range=(1, 100_000))
    n_edge_servers: int = _f(4, "number of edge servers M; 4 uses the paper's grid", range=(1, 1024))
    area_side_m: float = _f(500.0, "side L of the square area", range=(0.0, INF), open_low=True)
    bandwidth_hz: float = _f(100e6, "ES bandwidth B, shared by its users (eq. 2)", range=(0.0, INF), open_low=True)
    tx_power_w: float = _f(0.2, "uplink transmit power P", range=(0.0, INF), open_low=True)
    carrier_hz: float = _f(3.5e9, "carrier frequency f", range=(0.0, INF), open_low=True)
    noise_psd_w_per_hz: float = _f(4e-21, "noise PSD N0; sigma^2 = N0 x B (> 0 keeps every SINR finite)",
                                   range=(0.0, INF), open_low=True)
    path_loss: str = _f("free_space", "large-scale gain model (mec_env/radio)", choices=tuple(PATH_LOSS))
    fading: str = _f("rayleigh", "small-scale fading model (mec_env/radio)", choices=tuple(FADING))
    rician_k_db: float = _f(0.0, "Rician K-factor K (dB) of fading: rician; -100 dB is Rayleigh to 1e-10",
                           range=(-100.0, 100.0))
    min_distance_m: float = _f(10.0, "distance floor of the path-loss model (3GPP TR 38.901: d2D >= 10 m)",
                               range=(0.0, INF), open_low=True)
    interference: str = _f("physical", "interference model of eq. 3", choices=tuple(INTERFERENCE_MODELS))
    query_size_unit: str = _f("bytes_as_bits", "D_i: prompt bytes read as bits (reference) or 8 x bytes",
                              choices=("bytes_as_bits", "bits"))
    es_capacity_flops: float = _f(15.13e12, "nominal ES capacity C_j", range=(0.0, INF), open_low=True)
    es_capacity_low: float = _f(0.6, "C_j = nominal x U(low, high): low", range=(0.0, INF), open_low=True)
    es_capacity_high: float = _f(1.4, "C_j = nominal x U(low, high): high (also the bound of its float32 "
                                 "observation)", range=(0.0, FLOAT32_MAX), open_low=True)
    c_max_flops: float = _f(1.513e12, "per-user ES compute cap C_max (eq. 6)", range=(0.0, INF), open_low=True)
    local_capacity_flops: float = _f(91.06e9, "nominal local capacity C_L", range=(0.0, INF), open_low=True)
    local_capacity_low: float = _f(0.5, "C_L,i = nominal x U(low, high): low", range=(0.0, INF), open_low=True)
    local_capacity_high: float = _f(1.5, "C_L,i = nominal x U(low, high): high (also the bound of its float32 "
                                    "observation)", range=(0.0, FLOAT32_MAX), open_low=True)
    slm_params: float = _f(1.24e9, "SLM parameter count (Llama-3.2-1B)", range=(0.0, INF), open_low=True)
    llm_params: float = _f(8.03e9, "LLM parameter count (Llama-3.1-8B)", range=(0.0, INF), open_low=True)
    flops_per_param_token: float = _f(2.0, "FLOPs per parameter per token", range=(0.0, INF), open_low=True)
    effective_tokens: float = _f(1.2, "effective tokens per query: W = flops_per_param_token x params x this; "
                                 "calibrated on Local all at N = 120 (README)", range=(0.0, INF), open_low=True)
    tau: float = _f(0.6, "uncertainty threshold tau of constraint (11)", range=(0.0, 1.0))
    min_rate_bps: float = _f(1.0, "rate floor: a rate that underflows is capped here", range=(0.0, INF),
                             open_low=True)
    max_array_bytes: float = _f(2.0**31, "memory budget of one per-step array (copies x N x M float64, e.g. the "
                                "channel gains of a batched env's step): larger settings are refused",
                                range=(0.0, INF), open_low=True)
    queries: QueryConfig = _f(help="query source", default_factory=QueryConfig, nested=QueryConfig)

    def __post_init__(self) -> None:
        validate(self)

    @property
    def noise_power_w(self) -> float:
        return self.noise_psd_w_per_hz * self.bandwidth_hz

    def replace(self, **changes: Any) -> "ScenarioConfig":
        """A copy with ``changes`` applied (validated; dotted keys reach ``queries``)."""
        return scenario_from_dict({**to_dict(self), **_nest(changes)}, base=None)


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if "." in key:
            head, tail = key.split(".", 1)
            out.setdefault(head, {})[tail] = value
        else:
            out[key] = value
    return out


# what each annotated type accepts (annotations are strings: ``from __future__ import annotations``)
_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "float": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "dict": (lambda v: isinstance(v, Mapping), "a mapping"),
    "list": (lambda v: isinstance(v, (list, tuple)), "a list"),
}


def type_name(f: dataclasses.Field) -> str:
    return f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))


def _check_field(owner: str, f: dataclasses.Field, value: Any) -> None:
    name = f"{owner}.{f.name}" if owner else f.name
    meta = f.metadata
    expected = type_name(f)
    if expected in _TYPES:
        accepts, what = _TYPES[expected]
        if not accepts(value):
            raise ConfigError(name, value, what + (f" {_range_text(meta)}" if "range" in meta else ""))
    if expected == "float" and not math.isfinite(value):  # inf and NaN would reach the delays as inf or NaN
        raise ConfigError(name, value, "a finite number" + (f" {_range_text(meta)}" if "range" in meta else ""))
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(name, value, "one of " + ", ".join(repr(c) for c in meta["choices"]))
    if "range" in meta:
        lo, hi = meta["range"]
        low_ok = value > lo if meta.get("open_low") else value >= lo
        if not (low_ok and value <= hi):
            raise ConfigError(name, value, f"{'an integer' if expected == 'int' else 'a value'} {_range_text(meta)}")
    if "check" in meta:
        allowed = meta["check"](value)
        if allowed is not None:
            raise ConfigError(name, value, allowed)


def _number_text(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _range_text(meta: Mapping[str, Any]) -> str:
    lo, hi = meta["range"]
    if hi == INF:
        return f"{'>' if meta.get('open_low') else '>='} {_number_text(lo)}"
    return f"in {'(' if meta.get('open_low') else '['}{_number_text(lo)}, {_number_text(hi)}]"


def validate(cfg: Any, owner: str = "") -> None:
    """Check every field of a config dataclass against its type and metadata."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            continue  # nested configs validate themselves on construction
        _check_field(owner, f, value)
    if isinstance(cfg, ScenarioConfig):
        if cfg.es_capacity_low > cfg.es_capacity_high:
            raise ConfigError("es_capacity_low", cfg.es_capacity_low, f"<= es_capacity_high ({cfg.es_capacity_high})")
        if cfg.local_capacity_low > cfg.local_capacity_high:
            raise ConfigError("local_capacity_low", cfg.local_capacity_low,
                              f"<= local_capacity_high ({cfg.local_capacity_high})")
        if not cfg.noise_psd_w_per_hz * cfg.bandwidth_hz > 0.0:  # sigma^2 = 0 makes SINR = 0 / 0 for a deep fade
            raise ConfigError("noise_psd_w_per_hz", cfg.noise_psd_w_per_hz, "a value whose noise power N0 x B "
                              f"(bandwidth_hz = {cfg.bandwidth_hz:g}) does not underflow to 0")
        check_array_budget(cfg, 1)


def check_array_budget(cfg: ScenarioConfig, copies: int, what: str = "one instance", blame: str = "n_users") -> None:
    """Refuse a setting whose (copies, N, M) float64 arrays exceed ``cfg.max_array_bytes``.

    ``blame`` is the setting named in the error (``"num_envs"`` when ``copies`` is the user's batch size).
    """
    size = 8 * copies * cfg.n_users * cfg.n_edge_servers  # Python ints: exact for any count
    if size > cfg.max_array_bytes:
        value = copies if blame == "num_envs" else getattr(cfg, blame)
        gib = f"{size / 2**30:.3g}" if size < 2**1000 else "more than 1e290"
        copies_text = short_repr(copies)  # a count past 1e40 is cut short
        raise ConfigError(blame, value, f"a size whose per-step arrays fit the memory budget: {what} "
                          f"({copies_text} x N x M = {copies_text} x {cfg.n_users} x {cfg.n_edge_servers} "
                          f"float64) needs {gib} GiB > max_array_bytes = {cfg.max_array_bytes / 2**30:.3g} GiB")


def _plain(value: Any) -> Any:
    """numpy scalars as Python ones (``n_users=np.int64(20)`` is an integer too)."""
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def build_config(cls: type, data: Mapping[str, Any], owner: str = "") -> Any:
    """A validated ``cls`` from a mapping of its field names (nested configs from nested mappings).

    Unknown keys, wrong types and out-of-range values raise :class:`ConfigError` naming the
    field (``owner.field`` inside a nested config), the value and what is allowed.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(owner or cls.__name__, data, "a mapping of field names to values")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            where = f"{owner}.{key}" if owner else str(key)
            raise ConfigError(where, value, "a known field: " + ", ".join(sorted(fields)), kind="unknown field")
        f = fields[key]
        nested = f.metadata.get("nested")
        if nested is not None:
            value = value if isinstance(value, nested) else build_config(nested, value, key)
        else:
            value = _plain(value)
            if type_name(f) == "float":
                # YAML reads 1e8 as a string; accept numeric strings for float fields, nothing else
                if isinstance(value, str):
                    try:
                        value = float(value)
                    except ValueError:
                        pass
                if isinstance(value, int) and not isinstance(value, bool):
                    value = float(value)
            _check_field(owner, f, value)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - guarded by the field check above
        raise ConfigError(owner or cls.__name__, data, str(exc)) from exc



def scenario_from_dict(data: Mapping[str, Any], base: ScenarioConfig | None = None) -> ScenarioConfig:
    """Build a validated :class:`ScenarioConfig` from a (possibly partial) mapping over ``base``."""
    merged = to_dict(base) if base is not None else {}
    for key, value in data.items():
        if key == "queries" and isinstance(value, Mapping) and isinstance(merged.get("queries"), dict):
            merged["queries"] = {**merged["queries"], **value}
        else:
            merged[key] = value
    return build_config(ScenarioConfig, merged)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


YAML_MAX_DEPTH = 32  # configs are a few levels deep; deeper nesting is refused before it recurses


class _ConfigLoader(yaml.SafeLoader):
    """YAML's safe loader without aliases (an alias bomb expands to gigabytes) and with a depth limit."""

    def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "YAML aliases (*name) are not allowed in configs",
                                              event.start_mark)
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > YAML_MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nesting deeper than {YAML_MAX_DEPTH} levels",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(stream: Any) -> Any:
    """``yaml.safe_load`` without aliases and nesting past ``YAML_MAX_DEPTH`` (both raise ``yaml.YAMLError``)."""
    loader = _ConfigLoader(stream)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def parse_key_values(items: Iterable[str]) -> dict[str, Any]:
    """``["KEY=VALUE", ...]`` from a command line as a dict.

    A value is the text after the first ``=``, typed as YAML types a plain scalar (``20`` an integer,
    ``3.0e-4`` a float, ``true``, ``null``; empty text is null) or, when it starts with ``[`` or ``{``,
    read as a YAML flow list or mapping (``[64, 64]``); a quoted value loses its quotes. Any other text
    is the string as written: YAML's syntax is not applied to it, so ``a: b`` or ``- x`` stay strings,
    and a value holding ``#`` (where YAML would start a comment and cut the value short) is always the
    whole string. A number beyond the float range (``1.0e+309``, which reads as inf) is refused.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError("override", item, "KEY=VALUE")
        out[key] = _override_value(key, value)
    return out


_PLAIN = _ConfigLoader("")  # only its resolver is used: how YAML types a plain scalar


def _override_value(key: str, text: str) -> Any:
    """The value of one ``KEY=VALUE`` override (:func:`parse_key_values`)."""
    if "#" in text:
        return text
    stripped = text.strip()
    if stripped.startswith(("[", "{")):
        try:
            value = load_yaml(stripped)
        except yaml.YAMLError as err:
            raise ConfigError(key, text, f"a YAML flow list or mapping ({str(err).splitlines()[0]})") from None
    elif stripped.startswith(("'", '"')):
        try:
            value = load_yaml(stripped)
        except yaml.YAMLError:
            return text
        if not isinstance(value, str):
            return text
    elif _PLAIN.resolve(yaml.ScalarNode, stripped, (True, False)) == "tag:yaml.org,2002:str":
        return text
    else:
        value = load_yaml(stripped)
    if ".inf" not in stripped.lower() and ".nan" not in stripped.lower() and not _finite(value):
        raise ConfigError(key, text, "numbers within the float range (|x| <= 1.8e308; .inf for infinity)",
                          kind="number out of range")
    return value


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, Mapping):
        return all(_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    return True


YAML_MAX_BYTES = 2**20  # configs are a few kB; a larger file is refused before the (slow) parser reads it


def read_yaml(path: str | Path) -> Any:
    """The YAML document at ``path`` (empty file: ``{}``); unreadable, malformed or larger than
    ``YAML_MAX_BYTES`` YAML is a ConfigError."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read(YAML_MAX_BYTES + 1)  # a character is at least one byte: reading more is never needed
            if len(text.encode("utf-8")) > YAML_MAX_BYTES:
                raise ConfigError(str(path), "a file of more than 1 MiB",
                                  f"a YAML config of at most {YAML_MAX_BYTES} bytes (1 MiB)")
            data = load_yaml(text)
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(str(path), type(err).__name__, f"a readable UTF-8 YAML file ({err})") from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(str(path), "malformed YAML" + line, f"valid YAML ({str(err).splitlines()[0]})") from None
    return {} if data is None else data


def load_scenario(name_or_path: str | Path = "paper", **overrides: Any) -> ScenarioConfig:
    """Load a scenario by name (``mec_env/configs/scenario/{name}.yaml``, shipped) or path, then apply overrides.

    Overrides use field names; ``queries.metric="entropy"`` style dotted keys reach the
    query config. Unknown names raise :class:`~mec_env.errors.ConfigError`.
    """
    data, where = read_config_file(name_or_path, "scenario")
    if not isinstance(data, Mapping):
        raise ConfigError(where, type(data).__name__, "a YAML mapping")
    cfg = scenario_from_dict(data, base=ScenarioConfig())
    if overrides:
        cfg = scenario_from_dict(_nest(overrides), base=cfg)
    return cfg
