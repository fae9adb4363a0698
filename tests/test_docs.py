"""README's test command is the one CI runs, and it works in a fresh shell."""
import re
import subprocess

from conftest import ROOT


def readme_command() -> str:
    lines = [l[4:] for l in (ROOT / "README.md").read_text().splitlines()
             if re.match(r"^    apt-get update .* python -m pytest ", l)]
    assert len(lines) == 1, lines
    return lines[0]


def test_ci_runs_readme_command():
    """.ci/run extracts the same line (its sed, run here) and runs it whole."""
    script = (ROOT / ".ci" / "run").read_text()
    sed = re.search(r"sed -n '([^']+)' README.md", script).group(1)
    r = subprocess.run(["sed", "-n", sed, str(ROOT / "README.md")], capture_output=True, text=True)
    assert r.stdout.strip() == readme_command()
    assert 'bash -eo pipefail -c "$cmd"' in script


def test_readme_command_sets_up_everything():
    """A fresh shell has no venv and maybe no compiler: the line installs
    gcc, make and the venv package, creates and activates the venv."""
    cmd = readme_command()
    installed = cmd.split("&&")[1].split()
    for package in ("python3-venv", "gcc", "libc6-dev", "make", "cmake", "gcc-arm-none-eabi",
                    "libnewlib-arm-none-eabi", "qemu-system-arm"):
        assert package in installed, package
    steps = [s.strip() for s in cmd.split("&&")]
    assert steps.index("python3 -m venv .venv") < steps.index(". .venv/bin/activate") < \
        steps.index("pip install '.[test]'")
