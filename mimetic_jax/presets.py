"""One call for a whole model: :func:`mimetic` applies every applicable scheme by parameter names.

A *preset* is data: a tuple of :class:`Rule` s, each naming a scheme (a whole-model
transform of this package), its options and an optional ``include``/``exclude`` path
pattern. :func:`mimetic` applies the rules in turn, rule ``i`` with its own key
``jax.random.fold_in(key, i)``, so ``mimetic(tree, key, preset="convmixer", rules=[Rule("mlp")])``
is *exactly* ``mimetic_mlp(mimetic_conv(tree, fold_in(key, 0)))`` — nothing else happens.

=================  ======================================  ==========================  ================================
scheme             transform                               paper                       changes
=================  ======================================  ==========================  ================================
``"attention"``    :func:`~mimetic_jax.mimetic_attention`  Trockman & Kolter 2023      query/key/value/out kernels
``"conv"``         :func:`~mimetic_jax.mimetic_conv`       Trockman et al. ICLR 2023   depthwise conv kernels
``"mlp"``          :func:`~mimetic_jax.mimetic_mlp`        arXiv 2602.07156 (no key)   first MLP-layer kernels
``"ssm"``          :func:`~mimetic_jax.mimetic_ssm`        Trockman et al. 2024        A_log, Δ bias, B/C columns
``"emergence"``    :func:`~mimetic_jax.emergence_scale`    Li et al. 2024 (no key)     every kernel with factor ≠ 1
=================  ======================================  ==========================  ================================

Presets (:data:`PRESETS`), each the package's default options of its schemes:

* ``"vit"`` (also any Flax/HF/GPT-2-named transformer): ``attention``;
* ``"convmixer"``, ``"convnext"``: ``conv``;
* ``"mamba"``: ``ssm``.

Which schemes a preset combines is our choice (the papers each describe one scheme): a
preset applies a scheme only where a benchmark of ours backs it. ``mlp`` is in no preset:
no mean shift we measured beat the unshifted init (``benchmarks/conv_training.py``, 10
paired seeds; :mod:`mimetic_jax.mlp`); add it with ``rules=[Rule("mlp")]`` (ConvMixer's
``pointwise``, ConvNeXt's ``pwconv1``, a transformer's ``mlp_in``/``fc1``/``c_fc``/…).
``emergence`` is in no preset either (it rescales every kernel, a different kind of
change): ``rules=[Rule("emergence", {"alpha": ...})]``.

Options given to :func:`mimetic` itself (``num_heads=``, ``num_kv_heads=``,
``stacked_axes=``, ``config=``, ``layouts=``, ``method=`` …) go to every rule whose
transform takes them; a rule's own ``options`` win over them.

**What matches nothing.** A rule that comes from a preset and matches nothing in the
model (a ViT preset on a model whose MLP layers have unusual names, say) is skipped and
shown as such in the report; a rule the user wrote that matches nothing is a
``ValueError``, and so is a call in which no rule matches anything.

**What a preset cannot express.** A block that a preset's rule finds but its transform
cannot express (kernel shapes no layout fits, a head count the config does not give for
that block, an SSM block whose B/C split is ambiguous) is skipped: the rule runs on the
other blocks, and its :class:`ReportEntry` names the skipped blocks (``excluded``) and why
(``reason``), which ``print(report)`` shows. A rule the user wrote (``rules=[...]``) and the
single transforms (:func:`~mimetic_jax.mimetic_attention` …) raise that ``ValueError``
instead.

**Patterns for the whole call.** ``mimetic(..., include=..., exclude=...)`` applies to every
rule whose transform takes patterns (all but ``emergence``), searched in the same path that
transform searches (the block path for ``attention``/``ssm``, the kernel path for
``conv``/``mlp``). They narrow each rule, never widen it: a path is changed when it passes
the rule's own ``include``/``exclude`` (or the transform's default name pattern) **and** the
call's — ``exclude`` patterns add up (either excludes), ``include`` patterns must all match.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from mimetic_jax import _checks
from mimetic_jax._tree import Path, check_pattern, flatten, path_name
from mimetic_jax.attention import find_attention_blocks, mimetic_attention
from mimetic_jax.conv import find_depthwise_convs, mimetic_conv
from mimetic_jax.emergence import emergence_layers, emergence_scale
from mimetic_jax.mlp import find_mlp_layers, mimetic_mlp
from mimetic_jax.ssm import find_ssm_blocks, mimetic_ssm

Array = jax.Array

__all__ = ["PRESETS", "SCHEMES", "MimeticReport", "Rule", "mimetic", "mimetic_plan"]


@dataclasses.dataclass(frozen=True)
class Rule:
    """One step of :func:`mimetic`: a scheme, its options and where it applies.

    Attributes:
      scheme: one of :data:`SCHEMES` (``"attention"``, ``"conv"``, ``"mlp"``, ``"ssm"``, ``"emergence"``).
      options: keyword arguments of the scheme's transform (``{"alpha": 0.5}``), as a
        mapping or a tuple of pairs.
      include, exclude: regular expressions on paths, passed to the transform; ``None``
        keeps the transform's default (for ``conv``/``mlp`` that is a name pattern,
        :data:`~mimetic_jax.conv.DEPTHWISE_NAMES` / :data:`~mimetic_jax.mlp.MLP_NAMES`).
      name: a label for the report and for error messages (default: the scheme).
    """

    scheme: str
    options: Any = ()
    include: str | None = None
    exclude: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        opts = self.options.items() if isinstance(self.options, Mapping) else self.options
        try:
            pairs = [(str(k), v) for k, v in opts]
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"Rule options must be a mapping or a sequence of (name, value) pairs, got {self.options!r}"
            ) from err
        object.__setattr__(self, "options", tuple(sorted(pairs, key=lambda kv: kv[0])))
        if not isinstance(self.scheme, str) or self.scheme not in SCHEMES:
            raise ValueError(f"Rule scheme must be one of {sorted(SCHEMES)}, got {self.scheme!r}")
        check_pattern("Rule include", self.include)
        check_pattern("Rule exclude", self.exclude)
        if self.name is not None and not isinstance(self.name, str):
            raise TypeError(f"Rule name must be a str or None, got {self.name!r}")

    @property
    def label(self) -> str:
        return self.name or self.scheme

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.options)


@dataclasses.dataclass(frozen=True)
class _Scheme:
    apply: Callable[..., Any]
    find: Callable[..., list[Path]]
    takes_key: bool
    takes_patterns: bool


def _subset(fn: Callable[..., Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    names = inspect.signature(fn).parameters
    return {k: v for k, v in kwargs.items() if k in names}


def _attention_paths(tree: Any, kw: Mapping[str, Any]) -> list[Path]:
    qk, vo = kw.get("query_key", True), kw.get("value_output", True)
    out = []
    for b in find_attention_blocks(tree, **_subset(find_attention_blocks, kw)):
        lay = b.layout
        if lay.kv is not None:  # the fused key/value kernel changes with either structure
            q_name, kv_name, o_name = lay.names
            names = [q_name] * bool(qk) + [kv_name] + [o_name] * bool(vo)
        elif lay.qkv is None:
            q, k, v, o = lay.names
            names = [q, k] * bool(qk) + [v, o] * bool(vo)
        else:
            names = [lay.qkv] + [lay.out] * bool(vo)
        out += [b.kernel_path(n) for n in names]
    return out


def _ssm_paths(tree: Any, kw: Mapping[str, Any]) -> list[Path]:
    flat = flatten(tree)
    out = []
    for b in find_ssm_blocks(tree, **_subset(find_ssm_blocks, kw)):
        lay = b.layout
        rel = []
        if kw.get("transition", True):
            rel += [(lay.a_log,), b.dt]
        if kw.get("bc", True):
            rel += [b.bc_kernel]
        if kw.get("conv", False):
            rel += [(lay.conv1d, lay.kernel)] + [(lay.conv1d, lay.bias)] * ((*b.path, lay.conv1d, lay.bias) in flat)
        out += [(*b.path, *r) for r in rel]
    return out


def _emergence_paths(tree: Any, kw: Mapping[str, Any]) -> list[Path]:
    return [
        p
        for layer in emergence_layers(tree, **_subset(emergence_layers, kw))
        if layer.factor != 1.0
        for p in layer.paths
    ]


#: The schemes a :class:`Rule` can name: transform, path finder, whether it takes a key / patterns.
SCHEMES: dict[str, _Scheme] = {
    "attention": _Scheme(mimetic_attention, _attention_paths, True, True),
    "conv": _Scheme(
        mimetic_conv,
        lambda t, kw: [s.path for s in find_depthwise_convs(t, **_subset(find_depthwise_convs, kw))],
        True,
        True,
    ),
    "mlp": _Scheme(
        mimetic_mlp, lambda t, kw: [s.path for s in find_mlp_layers(t, **_subset(find_mlp_layers, kw))], False, True
    ),
    "ssm": _Scheme(mimetic_ssm, _ssm_paths, True, True),
    "emergence": _Scheme(emergence_scale, _emergence_paths, False, False),
}

#: Named presets: tuples of rules (data, not code). ``mimetic(preset=...)`` looks names up here.
PRESETS: dict[str, tuple[Rule, ...]] = {
    "vit": (Rule("attention"),),
    "convmixer": (Rule("conv"),),
    "convnext": (Rule("conv"),),
    "mamba": (Rule("ssm"),),
}


@dataclasses.dataclass(frozen=True)
class ReportEntry:
    """What one rule changed: its index, label, scheme and the leaf paths it re-wrote.

    ``paths`` is empty for a preset rule that matched nothing, or all of whose blocks were
    skipped (it was skipped). ``excluded`` names the blocks a preset rule found but could not
    express (skipped, left as they were) and ``reason`` says why (the transform's message for
    each, joined by ``"; "``); ``None`` when nothing was skipped.
    """

    index: int
    label: str
    scheme: str
    paths: tuple[str, ...]
    excluded: tuple[str, ...] = ()
    reason: str | None = None

    @property
    def skipped(self) -> bool:
        return not self.paths


@dataclasses.dataclass(frozen=True)
class MimeticReport:
    """Which paths got which scheme (one :class:`ReportEntry` per rule, in order). ``print`` it.

    Carries no arrays: it passes through ``jax.jit`` as static data.
    """

    entries: tuple[ReportEntry, ...]

    def by_path(self) -> dict[str, tuple[str, ...]]:
        """``{path: (labels of the rules that changed it, in order)}``."""
        out: dict[str, tuple[str, ...]] = {}
        for e in self.entries:
            for p in e.paths:
                out[p] = (*out.get(p, ()), e.label)
        return out

    @property
    def paths(self) -> frozenset[str]:
        return frozenset(self.by_path())

    def __str__(self) -> str:
        lines = []
        for e in self.entries:
            if e.skipped and not e.excluded:
                lines.append(f"[{e.index}] {e.label} ({e.scheme}): matched nothing (preset rule, skipped)")
                continue
            if e.skipped:
                lines.append(f"[{e.index}] {e.label} ({e.scheme}): every block it found was skipped (preset rule)")
            else:
                lines.append(f"[{e.index}] {e.label} ({e.scheme}): {len(e.paths)} leaves")
                lines += [f"    {p}" for p in e.paths]
            if e.excluded:
                lines.append(f"    skipped {len(e.excluded)} block(s) it cannot express: {', '.join(e.excluded)}")
                lines.append(f"    reason: {e.reason}")
        return "\n".join(lines)


jax.tree_util.register_static(MimeticReport)


def _as_rule(rule: Any, where: str) -> Rule:
    if isinstance(rule, Rule):
        out = rule
    elif isinstance(rule, Mapping):
        try:
            out = Rule(**rule)
        except TypeError as e:
            raise TypeError(
                f"{where}: a rule mapping takes scheme, options, include, exclude, name; got {sorted(rule)} ({e})"
            ) from None
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    else:
        raise TypeError(f"{where} must be a Rule or a mapping, got {rule!r} of type {type(rule).__name__}")
    scheme = SCHEMES[out.scheme]
    allowed = _options(out.scheme)
    bad = [k for k in out.kwargs if k not in allowed]
    if bad:
        raise ValueError(
            f"{where} ({out.label!r}): unknown option(s) {bad} for scheme {out.scheme!r}; "
            f"expected some of {sorted(allowed)} (include/exclude are Rule fields)"
        )
    if not scheme.takes_patterns and (out.include is not None or out.exclude is not None):
        raise ValueError(
            f"{where} ({out.label!r}): scheme {out.scheme!r} takes no include/exclude; "
            "select its layers with options={'order': ...}"
        )
    return out


def _rules(preset: str | None, rules: Sequence[Any] | None) -> list[tuple[Rule, bool]]:
    """``(rule, from_preset)`` pairs: the preset's rules, then the user's."""
    if preset is None and not rules:
        raise ValueError(f"pass preset= (one of {sorted(PRESETS)}) or rules=[Rule(...), ...]")
    out: list[tuple[Rule, bool]] = []
    if preset is not None:
        if not isinstance(preset, str) or preset.lower() not in PRESETS:
            raise ValueError(
                f"unknown preset {preset!r}; expected one of {sorted(PRESETS)} "
                "(or pass rules=[Rule(scheme, options, include=...)])"
            )
        out += [(r, True) for r in PRESETS[preset.lower()]]
    if rules is not None:
        if isinstance(rules, (Rule, Mapping, str)):
            raise TypeError(f"rules must be a sequence of Rule, got {type(rules).__name__}; wrap it in a list")
        out += [(_as_rule(r, f"rules[{i}]"), False) for i, r in enumerate(rules)]
    return out


_RESERVED = {"tree", "key", "include", "exclude", "allow_empty"}


def _options(scheme: str) -> frozenset[str]:
    """The options a scheme's transform takes (its keyword arguments but the reserved ones)."""
    return frozenset(inspect.signature(SCHEMES[scheme].apply).parameters) - _RESERVED


def _shared_options(options: Mapping[str, Any], rules: Sequence[tuple[Rule, bool]]) -> None:
    """Every option given to :func:`mimetic` must be taken by at least one rule's transform."""
    taken: set[str] = set()
    for rule, _ in rules:
        taken |= _options(rule.scheme)
    bad = sorted(k for k in options if k not in taken)
    if bad:
        schemes = sorted({r.scheme for r, _ in rules})
        raise TypeError(
            f"mimetic() got option(s) {bad} that no rule's transform takes (schemes {schemes}); "
            f"expected some of {sorted(taken)}"
        )


#: The call's ``(include, exclude)`` patterns (:func:`mimetic`'s own), ``None`` where not given.
Patterns = tuple[str | None, str | None]


def _call_kwargs(
    rule: Rule, shared: Mapping[str, Any] | None = None, patterns: Patterns = (None, None), skip: Sequence[str] = ()
) -> dict[str, Any]:
    """The transform's keyword arguments for ``rule``: the shared options, the rule's own, and its patterns.

    The call's ``include``/``exclude`` (``patterns``) and the blocks to ``skip`` (path names) only
    narrow the rule: each becomes one more alternative of its ``exclude`` (an ``include`` ``I`` as
    ``^(?!.*?(?:I))``, a skipped block ``b`` as ``^b$``), so the rule's own ``include`` (or the
    transform's default name pattern) is kept as it is.
    """
    options = _options(rule.scheme)
    kw = {k: v for k, v in (shared or {}).items() if k in options}
    kw.update(rule.kwargs)
    if rule.include is not None:
        kw["include"] = rule.include
    if rule.exclude is not None:
        kw["exclude"] = rule.exclude
    include, exclude = patterns
    extra = [] if exclude is None else [exclude]
    extra += [] if include is None else [f"^(?!.*?(?:{include}))"]
    extra += [f"^{re.escape(b)}$" for b in skip]
    if extra and SCHEMES[rule.scheme].takes_patterns:
        params = inspect.signature(SCHEMES[rule.scheme].apply).parameters
        own = kw.get("exclude", params["exclude"].default)
        alternatives = ([] if own is None else [own]) + extra
        kw["exclude"] = alternatives[0] if len(alternatives) == 1 else "|".join(f"(?:{a})" for a in alternatives)
    return kw


def _rule_error(i: int, rule: Rule, err: Exception) -> Exception:
    """``err`` (a ``ValueError``/``TypeError`` of a transform) with the rule that raised it in front."""
    kind = ValueError if isinstance(err, ValueError) else TypeError
    return kind(f"rule {i} ({rule.label!r}, scheme {rule.scheme!r}): {err}")


def _check_values(rules: Sequence[tuple[Rule, bool]], shared: Mapping[str, Any], patterns: Patterns) -> None:
    """Run each rule's transform on an empty tree: its own checks of the option values, no others.

    Every transform with ``allow_empty`` checks its options before it reads the tree and returns
    an empty tree unchanged, so a bad value (``alpha=nan``, ``method="svd"``) raises here, with
    the transform's own message, before anything is drawn; ``emergence``'s path finder takes
    (and checks) all of its options. The key is a fixed one: nothing is drawn.
    """
    for i, (rule, _) in enumerate(rules):
        scheme = SCHEMES[rule.scheme]
        if "allow_empty" not in inspect.signature(scheme.apply).parameters:
            continue
        args: tuple[Any, ...] = ({}, jax.random.key(0)) if scheme.takes_key else ({},)
        try:
            scheme.apply(*args, allow_empty=True, **_call_kwargs(rule, shared, patterns))
        except (TypeError, ValueError) as e:
            raise _rule_error(i, rule, e) from e


def _find_skipping(
    i: int, rule: Rule, from_preset: bool, tree: Any, shared: Mapping[str, Any], patterns: Patterns
) -> tuple[list[Path], list[tuple[str, str]]]:
    """The rule's paths, and for a preset's rule the ``(block, reason)`` of each block it cannot express.

    A preset's rule is searched again without each block its transform refuses
    (:class:`~mimetic_jax._checks.BlockError`), one at a time; any other error, and every
    error of a rule the user wrote, is raised with the rule's name.
    """
    skipped: list[tuple[str, str]] = []
    while True:
        try:
            kw = _call_kwargs(rule, shared, patterns, [b for b, _ in skipped])
            return SCHEMES[rule.scheme].find(tree, kw), skipped
        except _checks.BlockError as e:
            if not from_preset or e.block in {b for b, _ in skipped}:
                raise ValueError(f"rule {i} ({rule.label!r}, scheme {rule.scheme!r}): {e}") from None
            skipped.append((e.block, str(e)))
        except ValueError as e:
            raise ValueError(f"rule {i} ({rule.label!r}, scheme {rule.scheme!r}): {e}") from None


def _plan(
    tree: Any, rules: Sequence[tuple[Rule, bool]], shared: Mapping[str, Any], patterns: Patterns = (None, None)
) -> MimeticReport:
    _check_values(rules, shared, patterns)
    entries = []
    for i, (rule, from_preset) in enumerate(rules):
        paths, skipped = _find_skipping(i, rule, from_preset, tree, shared, patterns)
        if not paths and not from_preset:
            raise ValueError(
                f"rule {i} ({rule.label!r}, scheme {rule.scheme!r}, include={rule.include!r}, "
                f"exclude={rule.exclude!r}"
                + ("" if patterns == (None, None) else f"; the call's include={patterns[0]!r}, exclude={patterns[1]!r}")
                + ") matches nothing in the tree"
            )
        entries.append(
            ReportEntry(
                i,
                rule.label,
                rule.scheme,
                tuple(path_name(p) for p in paths),
                tuple(b for b, _ in skipped),
                "; ".join(r for _, r in skipped) if skipped else None,
            )
        )
    if all(e.skipped for e in entries):
        names = sorted({path_name(p[:-1]) for p in flatten(tree)})[:10]
        why = "".join(
            f"; rule {e.index} ({e.label!r}) skipped every block it found: {e.reason}" for e in entries if e.excluded
        )
        raise ValueError(
            f"no rule matches anything in the tree ({', '.join(e.label for e in entries)}; the "
            f"tree's layers include {names}{why}); pass options such as num_heads=/stacked_axes=/"
            "layouts=, or rules=[Rule(scheme, include=...)]"
        )
    return MimeticReport(tuple(entries))


def _check_call_patterns(include: Any, exclude: Any, rules: Sequence[tuple[Rule, bool]]) -> Patterns:
    """The call's own ``include``/``exclude``: compiling patterns, and some rule must take them."""
    check_pattern("include", include)
    check_pattern("exclude", exclude)
    if (include is not None or exclude is not None) and not any(SCHEMES[r.scheme].takes_patterns for r, _ in rules):
        schemes = sorted({r.scheme for r, _ in rules})
        raise TypeError(
            f"mimetic() got include=/exclude= but no rule's transform takes patterns (schemes {schemes}); "
            "select emergence's layers with options={'order': ...}"
        )
    return include, exclude


def mimetic_plan(
    tree: Any,
    *,
    preset: str | None = None,
    rules: Sequence[Any] | None = None,
    include: str | None = None,
    exclude: str | None = None,
    **options: Any,
) -> MimeticReport:
    """The report :func:`mimetic` would return, without changing anything (shapes only).

    ``preset``, ``rules``, ``include``, ``exclude`` and the options are those of :func:`mimetic`;
    the blocks a preset's rule cannot express are skipped and reported as :func:`mimetic` does.

    The options are checked as :func:`mimetic` checks them, by the transforms' own checks (a
    bad ``alpha``, ``method`` or ``sigma_start`` is a ``ValueError``/``TypeError`` naming it),
    and then every rule that matches something runs on the tree's shapes (``jax.eval_shape``:
    nothing is computed or drawn), so the checks that read the tree (each kernel's dtype) run
    too: a plan that succeeds is one :func:`mimetic` accepts, up to checks on values.
    """
    rule_list = _rules(preset, rules)
    _shared_options(options, rule_list)
    patterns = _check_call_patterns(include, exclude, rule_list)
    plan = _plan(tree, rule_list, options, patterns)
    _trace_rules(tree, rule_list, options, plan, patterns)
    return plan


#: JAX's errors for a check that needs concrete values, which an abstract run cannot give.
_NEEDS_VALUES = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerIntegerConversionError,
)


def _trace_rules(
    tree: Any, rules: Sequence[tuple[Rule, bool]], shared: Mapping[str, Any], plan: MimeticReport, patterns: Patterns
) -> None:
    """Run every rule that matches something on the tree's shapes only (``jax.eval_shape``: nothing is
    computed or drawn), so that the checks that need the tree (each kernel's dtype: ``alpha=1e12`` on
    float16 kernels) raise in the plan as they would in :func:`mimetic`, with the rule's name."""
    from flax import nnx

    if isinstance(tree, nnx.Module):  # run on a copy rebuilt inside the trace, never on the module
        graphdef, state = nnx.split(tree)
        arrays: Any = state

        def rebuild(a: Any) -> Any:
            return nnx.merge(graphdef, a)
    else:
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        where = [i for i, x in enumerate(leaves) if isinstance(x, (jax.Array, np.ndarray))]
        arrays = [leaves[i] for i in where]

        def rebuild(a: Any) -> Any:
            full = list(leaves)
            for i, x in zip(where, a, strict=True):
                full[i] = x
            return jax.tree_util.tree_unflatten(treedef, full)

    for i, (rule, _) in enumerate(rules):
        if plan.entries[i].skipped:
            continue
        scheme = SCHEMES[rule.scheme]

        def run(
            a: Any, scheme: _Scheme = scheme, rule: Rule = rule, skip: tuple[str, ...] = plan.entries[i].excluded
        ) -> None:
            args = (rebuild(a), jax.random.key(0)) if scheme.takes_key else (rebuild(a),)
            scheme.apply(*args, **_call_kwargs(rule, shared, patterns, skip))

        try:
            jax.eval_shape(run, arrays)
        except _NEEDS_VALUES:
            continue  # a check on values: mimetic itself runs it on the concrete tree
        except (TypeError, ValueError) as e:
            raise _rule_error(i, rule, e) from e


def mimetic(
    tree: Any,
    key: Array,
    preset: str | None = None,
    *,
    rules: Sequence[Any] | None = None,
    report: bool = False,
    include: str | None = None,
    exclude: str | None = None,
    **options: Any,
) -> Any:
    """Mimetically initialize a whole model in one call: every scheme of a preset, then ``rules``.

    Rule ``i`` of ``PRESETS[preset] + rules`` runs its transform (:data:`SCHEMES`) on the
    result of rule ``i−1`` with key ``jax.random.fold_in(key, i)`` (schemes without a key
    ignore it), ``include``/``exclude`` and ``options`` passed through. A rule of the user's
    that matches nothing, or finds a block it cannot express, is a ``ValueError`` naming it
    (before anything is drawn); a preset's rule that matches nothing is skipped and reported,
    and one that finds blocks it cannot express skips those blocks (left as they were) and
    reports them with the reason (:class:`ReportEntry` ``excluded``/``reason``).

    Args:
      tree: a linen params dict, an ``nnx.State``, an ``nnx.Module``, an Equinox module or
        a plain nested dict (transformers' Flax ``params``).
      key: a PRNG key.
      preset: ``"vit"``, ``"convmixer"``, ``"convnext"``, ``"mamba"`` (see :data:`PRESETS`) or ``None``.
      rules: more :class:`Rule` s (or mappings with its fields), applied after the preset's.
      report: also return a :class:`MimeticReport` of which leaves each rule changed.
      include, exclude: regular expressions applied to every rule whose transform takes
        patterns (all but ``emergence``; a ``TypeError`` when no rule does), on the path that
        transform searches. They only narrow a rule: a path must pass the rule's own
        ``include`` (or its transform's default name pattern) *and* this ``include``, and is
        left out by the rule's ``exclude`` *or* this ``exclude``.
      **options: options of the transforms (``num_heads``, ``num_kv_heads``, ``stacked_axes``,
        ``config``, ``layouts``, ``method`` …), given to every rule whose transform takes
        them; a rule's own options win. An option no rule takes is a ``TypeError``.

    Returns:
      the new tree (a dict / ``nnx.State`` / Equinox module; an ``nnx.Module`` is updated in
      place and returned), or ``(tree, report)``. Works under ``jax.jit`` (the report is
      static data), so a sharded model is created directly sharded.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from mimetic_jax.experiments.models import ViT
      >>> v = ViT(10, width=16, depth=2, num_heads=2).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
      >>> v, rep = mimetic(v, jax.random.key(1), preset="vit", rules=[Rule("mlp")], report=True)
      >>> [(e.label, len(e.paths)) for e in rep.entries]
      [('attention', 8), ('mlp', 2)]
    """
    key = _checks.prng_key("key", key)
    rule_list = _rules(preset, rules)
    _shared_options(options, rule_list)
    patterns = _check_call_patterns(include, exclude, rule_list)
    plan = _plan(tree, rule_list, options, patterns)
    for i, (rule, _) in enumerate(rule_list):
        if plan.entries[i].skipped:
            continue
        scheme = SCHEMES[rule.scheme]
        args = (tree, jax.random.fold_in(key, i)) if scheme.takes_key else (tree,)
        tree = scheme.apply(*args, **_call_kwargs(rule, options, patterns, plan.entries[i].excluded))
    return (tree, plan) if report else tree
