"""Fixtures of the CLI tests: a helper that runs `dtp` in-process and returns (exit code, stdout,
stderr); the tiny checkpoint (`tiny_checkpoint`) comes from tests/conftest.py."""

import pytest

from dtp.cli import main


@pytest.fixture()
def dtp(capsys):
    """dtp(*words) -> (code, out, err); argparse exits become codes too."""

    def run(*argv):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code
        out, err = capsys.readouterr()
        return code, out, err

    return run
