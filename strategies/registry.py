"""The strategies there are, found once among this package's subpackages."""

import importlib
import pkgutil
from functools import cache

import strategies
from strategies.base import Strategy

NOT_STRATEGIES = {"management"}


@cache
def all_strategies() -> dict[str, type[Strategy]]:
    """name -> Strategy class, in the order of their labels."""
    found = {}
    for module in pkgutil.iter_modules(strategies.__path__):
        if not module.ispkg or module.name in NOT_STRATEGIES:
            continue
        package = importlib.import_module(f"strategies.{module.name}")
        for value in vars(package).values():
            if (
                isinstance(value, type)
                and issubclass(value, Strategy)
                and value.__module__.startswith(package.__name__)
            ):
                found[value.name] = value
    return dict(sorted(found.items(), key=lambda item: item[1].label))


def get_strategy(name: str) -> type[Strategy]:
    """The strategy of this name; LookupError with a message for people otherwise."""
    found = all_strategies().get(name)
    if found is None:
        raise LookupError(f"Unknown strategy {name!r}; there are: {', '.join(all_strategies())}.")
    if not found.implemented:
        raise LookupError(f"The {found.label} strategy is not available in this version yet.")
    return found


def default_strategy_name() -> str:
    return next(s.name for s in all_strategies().values() if s.default)


def strategy_choices() -> list[tuple[str, str]]:
    """Every strategy, for a model field (what a policy may name once it is implemented)."""
    return [(s.name, s.display_label()) for s in all_strategies().values()]


def strategy_options(vm=None, disks=None) -> list[tuple[str, str, str]]:
    """(name, label, why it cannot back up this VM or "") for each strategy; without a VM, why it
    cannot run at all."""
    if vm is not None and disks is None:
        disks = list(vm.disks.select_related("manager"))
    return [(s.name, s.display_label(), s.unavailable_reason(vm, disks)) for s in all_strategies().values()]


def usable_strategy_choices() -> list[tuple[str, str]]:
    """The strategies implemented in this version: what a policy may name."""
    return [(name, label) for name, label, reason in strategy_options() if not reason]


def not_available(options: list[tuple[str, str, str]], *, by_name: bool = False) -> str:
    """ "Not available: LABEL (REASON); ..." for the options that cannot be chosen ("" when all can)."""
    refused = [f"{name if by_name else label} ({reason})" for name, label, reason in options if reason]
    return f"Not available: {'; '.join(refused)}." if refused else ""


def refusal(name: str, vm=None) -> str:
    """Why a form or API request naming this strategy is refused ("" when it is accepted)."""
    try:
        cls = get_strategy(name)
    except LookupError as e:
        return str(e)
    reason = cls.unavailable_reason(vm, list(vm.disks.select_related("manager"))) if vm is not None else ""
    return f"The {cls.label} strategy cannot back up VM {vm.name}: {reason}." if reason else ""


# ----- the strategies' declared options (Strategy.options) ---------------------------------------


def options_text(cls: type[Strategy]) -> str:
    """ "the SSH transfer strategy's options are: netcat" / "the Disk image transfer strategy has no options"."""
    if not cls.options:
        return f"the {cls.label} strategy has no options"
    return f"the {cls.label} strategy's options are: {', '.join(o.name for o in cls.options)}"


def option_refusal(strategy: str, name: str) -> str:
    """Why option `name` is refused for a backup with `strategy` ("" when it is one of its options)."""
    cls = get_strategy(strategy)
    if cls.option_named(name) is not None:
        return ""
    owners = [s for s in all_strategies().values() if s.option_named(name) is not None]
    if owners:
        owner = owners[0]
        return (
            f"Option {name} is the {owner.label} strategy's ({owner.name}), not the {cls.label} strategy's; "
            f"{options_text(cls)}. Choose {owner.name} or leave {name} out."
        )
    return f"Unknown option {name!r}: {options_text(cls)}."


def check_options(strategy: str, given: dict | None) -> dict:
    """The options of a backup with `strategy`, each checked against its declared schema and typed
    (from JSON or the command line's text); ValueError in words for an unknown one, another
    strategy's, or a bad value. Options left at their default are kept as given."""
    if given is None:
        return {}
    if not isinstance(given, dict):
        raise ValueError(f'Options are given by name, as {{"name": value}}; {options_text(get_strategy(strategy))}.')
    cls = get_strategy(strategy)
    checked = {}
    for name, value in given.items():
        refused = option_refusal(strategy, name)
        if refused:
            raise ValueError(refused)
        checked[name] = cls.option_named(name).parse(value)
    return checked


def options_help() -> str:
    """Every implemented strategy's options in words, for the API's and the command line's help."""
    parts = [
        f"{cls.name}: " + "; ".join(o.describe() for o in cls.options)
        for cls in all_strategies().values()
        if cls.implemented and cls.options
    ]
    return " ".join(parts) if parts else "no strategy has options"
