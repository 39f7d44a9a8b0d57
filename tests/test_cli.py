"""The `apb` entry point: help, unknown commands, lazy imports."""
from __future__ import annotations

import subprocess
import sys

from evaluator import cli

from evaluator.registry import model_keys as keys


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_every_command_module_has_the_cli_contract():
    import importlib

    for name in cli.COMMANDS:
        module = importlib.import_module(f"evaluator.commands.{name.replace('-', '_')}")
        assert callable(module.configure_parser) and callable(module.run), name


def test_unknown_command_exits_2():
    result = subprocess.run([sys.executable, "-m", "evaluator.cli", "frobnicate"], capture_output=True, text=True)
    assert result.returncode == 2 and "unknown command 'frobnicate'" in result.stderr


def test_validate_does_not_import_torch():
    probe = ("import sys\nfrom evaluator import cli\nfrom evaluator.paths import repo_root\n"
             "code = cli.main(['validate', '--root', str(repo_root())])\n"
             "print(code, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.stdout.strip().splitlines()[-1] == "0 False", result.stdout + result.stderr


def test_model_key_maker_matches_the_seed_format():
    assert keys.model_key_maker("HYDRA_Sehwag2020Hydra", "resnet18", "CIFAR10", "weights", "90") == \
        "HYDRA_Sehwag2020Hydra_R18_CIFAR10_US_90"
    assert keys.model_key_maker("HARP_Zhao2023Holistic", "vgg16", "SVHN", "channels", 50) == \
        "HARP_Zhao2023Holistic_V16_SVHN_S_50"
    parsed = keys.parse_model_key("TwinRep_Li2023Learning_V16_CIFAR10_S_75")
    assert parsed == ("TwinRep_Li2023Learning", "vgg16", "CIFAR10", "S", 75)
