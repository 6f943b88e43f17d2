"""One torch thread per stage by default (training/threads.py), restored afterwards."""

import pytest
import torch

from training.threads import check_threads, cpu_threads


def test_cpu_threads_sets_then_restores() -> None:
    before = torch.get_num_threads()
    with cpu_threads(before + 1):  # differs from the current count, whatever it is
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), cpu_threads(before + 1):
        raise RuntimeError("a failing stage")
    assert torch.get_num_threads() == before  # restored on failure too


def test_none_keeps_torch_default() -> None:
    before = torch.get_num_threads()
    with cpu_threads(None):
        assert torch.get_num_threads() == before


@pytest.mark.parametrize("bad", [0, -2])
def test_threads_below_one_are_refused_by_every_stage(bad: int) -> None:
    from eval.evaluate import EvalConfig
    from training.regression import RegressionConfig
    from training.train import TrainConfig

    with pytest.raises(ValueError, match="--threads must be >= 1"):
        check_threads(bad)
    for make in (lambda: EvalConfig(tasks=("reach-v3",), threads=bad), lambda: RegressionConfig(threads=bad),
                 lambda: TrainConfig(threads=bad)):
        with pytest.raises(ValueError, match="--threads must be >= 1"):
            make()
