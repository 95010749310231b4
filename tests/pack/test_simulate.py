import json

from patchpack.cli import main
from patchpack.pack.simulate import SimConfig, simulate, synthetic_sizes


def test_synthetic_sizes_fit_the_sequence_and_are_mostly_non_square():
    g = synthetic_sizes(5000, 256, 16, seed=0)
    tokens = g[:, 0] * g[:, 1]
    assert tokens.min() >= 1 and tokens.max() <= 256
    assert 0.75 < (g[:, 0] != g[:, 1]).mean() < 0.95


def test_simulate_bfd_beats_next_fit():
    bfd = simulate(SimConfig(examples=4000, seq_len=256))
    nf = simulate(SimConfig(examples=4000, seq_len=256, algorithm="next-fit"))
    assert bfd["padding_fraction"] < 0.02 < 0.1 < nf["padding_fraction"]
    assert bfd["examples"] == 4000 and bfd["max_wait"] <= 2 * 1024


def test_cli_json(capsys):
    assert main(["simulate", "--seq-len", "128", "--examples", "2000", "--packer", "first-fit",
                 "--max-per-seq", "3", "--drop", "beta", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    for k in ("padding_fraction", "examples", "sequences", "examples_per_sequence", "max_wait"):
        assert k in d
    assert 0 <= d["padding_fraction"] <= 1 and d["examples"] == 2000
    assert d["examples_per_sequence"] <= 3 and d["drop_fraction"] > 0.1


def test_cli_text(capsys):
    assert main(["simulate", "--seq-len", "256", "--examples", "1000"]) == 0
    out = capsys.readouterr().out
    assert "padding" in out and "offline BFD" in out
