"""The fuzz run's summary: how many cases each target was sent, and the answers they got."""

from collections import Counter

from tests.fuzz.runner import CASES, EXAMPLES


def pytest_terminal_summary(terminalreporter) -> None:
    if not CASES:
        return
    by_target: Counter[str] = Counter()
    by_status: Counter[tuple[str, int]] = Counter()
    operations: dict[str, set[str]] = {}
    for (target, operation, status), count in CASES.items():
        by_target[target] += count
        by_status[(target, status // 100)] += count
        operations.setdefault(target, set()).add(operation)
    terminalreporter.section("fuzz summary")
    for target, count in sorted(by_target.items()):
        answers = ", ".join(f"{n} {k}xx" for (t, k), n in sorted(by_status.items()) if t == target)
        terminalreporter.write_line(
            f"{target}: {count} cases over {len(operations[target])} operations "
            f"(FUZZ_EXAMPLES={EXAMPLES}); answers: {answers}"
        )
