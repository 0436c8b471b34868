"""Sizes for people, in IEC units (KiB, MiB, GiB: powers of 1024, named as such)."""

UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def iec(n: int | float | None) -> str:
    """1536 -> "1.5 KiB"; whole bytes below 1 KiB ("512 bytes"); "" for None."""
    if n is None:
        return ""
    n = float(n)
    for unit in UNITS:
        if abs(n) < 1024 or unit == UNITS[-1]:
            break
        n /= 1024
    if unit == "bytes":
        return "1 byte" if n == 1 else f"{n:.0f} bytes"
    return f"{n:.1f} {unit}"
