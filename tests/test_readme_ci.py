"""README.md's two set-up commands and .ci/run must stay in step."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_has_two_setup_commands_and_ci_runs_the_test_one():
    commands = _readme_commands()
    assert len(commands) == 2
    assert "pytest" in commands[1] and "kspace-sim build" in commands[0]
    for c in commands:
        assert c.index("torch==2.13.0") < c.index('-e ".[')  # the CPU wheel first, then the project
    ci = (ROOT / ".ci/run").read_text().splitlines()
    assert commands[1] in ci
