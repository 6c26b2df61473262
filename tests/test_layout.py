"""The package layout the design card asks for."""
import subprocess
import sys


def test_kernels_import_only_as_a_subpackage():
    code = ("import sys, nanobrag_numba.simulator, nanobrag_numba.kernels.cpu, nanobrag_numba.kernels.noise; "
            "print('kernels' in sys.modules, 'nanobrag_numba.kernels' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert p.stdout.split() == ["False", "True"], p.stderr


def test_console_scripts_are_declared():
    import configparser
    import pathlib
    cfg = configparser.ConfigParser()
    cfg.read(pathlib.Path(__file__).resolve().parents[1] / "setup.cfg")
    scripts = cfg["options.entry_points"]["console_scripts"]
    assert "nanobrag-numba = nanobrag_numba.cli:console_main" in scripts
    assert "nanoBragg = nanobrag_numba.cli:console_main" in scripts
