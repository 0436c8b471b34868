"""The backup strategies, by name.

This table says what each strategy is and what it needs from the engine; the modules that
carry out a strategy register against these names as they land (see DESIGN.md).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class StrategyInfo:
    name: str
    label: str
    incremental: bool
    min_api_version: tuple[int, int]
    deprecated: bool = False


STRATEGIES: dict[str, StrategyInfo] = {
    info.name: info
    for info in (
        StrategyInfo("disk_attachment", "Disk attachment (proxy VM)", incremental=False, min_api_version=(4, 0)),
        StrategyInfo("image_transfer", "Disk image transfer", incremental=True, min_api_version=(4, 2)),
        StrategyInfo("ssh_transfer", "SSH transfer", incremental=True, min_api_version=(4, 0)),
        StrategyInfo("cbt", "Change block tracking", incremental=True, min_api_version=(4, 4)),
        StrategyInfo(
            "export_domain", "Export storage domain", incremental=False, min_api_version=(4, 0), deprecated=True
        ),
    )
}
DEFAULT_STRATEGY = "image_transfer"


def strategy_choices() -> list[tuple[str, str]]:
    return [(s.name, s.label + (" (deprecated)" if s.deprecated else "")) for s in STRATEGIES.values()]


def strategies_for_api_version(major: int, minor: int) -> list[str]:
    """The strategies an engine of this API version can run."""
    return [s.name for s in STRATEGIES.values() if (major, minor) >= s.min_api_version]
