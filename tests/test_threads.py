"""A batch in fixed chunks on any number of threads: the same bits, the batch mean's values, and
the small matrix products that the chunks run on."""

import os
import time
import warnings

import numpy as np
import pytest

from stablebptt.adjoint.engine import GRADIENT_CHUNK, LOSS_CHUNK, Problem, batch_chunks
from stablebptt.controllers._dense import SMALL_ROWS, add_matmul_at, matmul, matmul_bt
from stablebptt import Trainer, preset, read_run
from stablebptt.train.build import build_task, initial_parameters

SHAPES = [(1, 100, 100), (3, 100, 100), (4, 5, 100), (7, 101, 33), (8, 100, 1), (16, 3, 2),
          (SMALL_ROWS + 1, 64, 64), (40, 100, 100)]


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_small_products_match_numpy(m, k, n, dtype, rtol, rng):
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)  # bounds the rounding
    out = np.full((m, n), np.nan, dtype)
    matmul(a, b, out)
    assert np.all(np.abs(out - exact) <= rtol * scale)
    out_bt = np.full((m, n), np.nan, dtype)
    matmul_bt(a, np.ascontiguousarray(b.T), out_bt)
    assert np.all(np.abs(out_bt - exact) <= rtol * scale)
    # the parameter-gradient product: a.T @ b for a (rows, k) and b (rows, n)
    c = rng.standard_normal((m, n)).astype(dtype)
    out_at = np.zeros(k * n, dtype)
    add_matmul_at(a, c, out_at)
    out_at = out_at.reshape(k, n)
    exact_at = a.T.astype(np.float64) @ c.astype(np.float64)
    assert np.all(np.abs(out_at - exact_at) <= rtol * (np.abs(a.T).astype(np.float64) @ np.abs(c)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_each_row_of_a_small_product_has_the_same_bits_alone(dtype, rng):
    """Sums in a fixed order per element: a row computed alone or among others (an even or an
    odd count, a wide or a narrow product) gives the same bits."""
    for n in (100, 3):
        a = rng.standard_normal((SMALL_ROWS, 100)).astype(dtype)
        b = rng.standard_normal((100, n)).astype(dtype)
        whole = np.empty((SMALL_ROWS, n), dtype)
        matmul(a, b, whole)
        for rows in (slice(0, 1), slice(3, 6), slice(4, 8)):
            part = np.empty((rows.stop - rows.start, n), dtype)
            matmul(np.ascontiguousarray(a[rows]), b, part)
            np.testing.assert_array_equal(part, whole[rows])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_column_parameter_gradient_is_the_register_blocks_chains(dtype, rng):
    """An output layer's kernel gradient (one column) has its own vectorised loop: the same
    in-order FMA chains, so the same bits, as the register blocks give every other product."""
    from stablebptt.controllers._fma_tile import fma_matmul

    a = rng.standard_normal((403, 37)).astype(dtype)
    b = rng.standard_normal((403, 1)).astype(dtype)
    blocks = np.empty((37, 1), dtype)
    fma_matmul(a.T, b, blocks)
    g = np.zeros(37, dtype)
    add_matmul_at(a, b, g)
    np.testing.assert_array_equal(g, blocks.ravel())


def test_batch_chunks():
    assert batch_chunks(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert batch_chunks(3, 4) == [slice(0, 3)]
    assert GRADIENT_CHUNK < LOSS_CHUNK


SMALL_TASKS = {
    "cartpole": dict(poles=2, width=32, n_steps=20, time=0.2, rho=0.1),
    "guidance": dict(width=32, n_steps=12),
    "quantum": dict(nx=16, n_steps=12),
}


def _problem(task, dtype):
    config = preset(task, dtype=dtype, **SMALL_TASKS[task])
    built = build_task(config)
    theta, _ = initial_parameters(config, built.controller)
    # away from the zero output kernel of the presets, so that every path carries something
    theta = theta + (0.1 * np.random.default_rng(7).standard_normal(theta.size)).astype(dtype)
    return built, theta


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("task", sorted(SMALL_TASKS))
def test_same_bits_for_any_thread_count(task, dtype):
    built, theta = _problem(task, dtype)
    problem = built.problem
    batch = built.train[:10]  # chunks of 4, 4 and 2
    states = np.concatenate([built.train, built.test])[:150]  # loss chunks of 64, 64 and 22
    results = []
    for threads in (1, 2, 3):
        problem.threads = threads
        combined = problem.gradient(theta, batch, "C")
        regular = problem.gradient(theta, batch, "R")
        results.append((combined.loss, combined.grad_regular, combined.grad_modified,
                        regular.grad, problem.losses(theta, states), problem.rollout(theta, batch)))
    first = results[0]
    for other in results[1:]:
        assert other[0] == first[0] and other[4] == first[4]
        for a, b in zip(first[1:4] + first[5][1:], other[1:4] + other[5][1:]):
            np.testing.assert_array_equal(a, b)
        assert other[5][0] == first[5][0]
    # the combined mode's R part is the R mode's gradient, bit for bit
    np.testing.assert_array_equal(first[1], first[3])


@pytest.mark.parametrize("task", sorted(SMALL_TASKS))
def test_chunks_add_up_to_the_batch_mean(task):
    """Chunk weights are shares of the batch: the loss and gradient of a batch of 10 equal the
    means of the ten one-sample ones (float64)."""
    built, theta = _problem(task, "float64")
    problem = built.problem
    problem.threads = 2
    batch = built.train[:10]
    whole = problem.gradient(theta, batch, "C")
    singles = [problem.gradient(theta, batch[i:i + 1], "C") for i in range(10)]
    assert whole.loss == pytest.approx(np.mean([s.loss for s in singles]), rel=1e-12)
    for part in ("grad_regular", "grad_modified"):
        mean = np.mean([getattr(s, part) for s in singles], axis=0)
        np.testing.assert_allclose(getattr(whole, part), mean, rtol=1e-9,
                                   atol=1e-12 * np.abs(mean).max())
    assert problem.loss(theta, batch) == pytest.approx(whole.loss, rel=1e-12)


def test_a_worker_error_reaches_the_caller_and_the_workers_go_on():
    from stablebptt.adjoint.threads import _Crew

    crew = _Crew(2)
    with pytest.raises(ZeroDivisionError):
        crew.run([lambda: 1, lambda: 1 / 0, lambda: 3])
    assert crew.run([lambda: 1, lambda: 2, lambda: 3]) == [1, 2, 3]
    assert crew.run([lambda: "alone"]) == ["alone"]


def test_problems_used_from_two_threads_at_once_give_their_own_results():
    """The workers serve one call at a time; a call that finds them busy computes alone, with
    the same bits."""
    import threading

    built, theta = _problem("cartpole", "float32")
    batches = [built.train[i:i + 10] for i in (0, 10)]
    expected = [built.problem.gradient(theta, b, "C").grad for b in batches]
    problems = [Problem(built.problem.sim, built.controller, built.problem.n_steps,
                        built.problem.loss_mode, built.problem.rho, threads=2) for _ in batches]
    got = [[], []]

    def train(index):
        for _ in range(20):
            got[index].append(problems[index].gradient(theta, batches[index], "C").grad)

    callers = [threading.Thread(target=train, args=(i,)) for i in (0, 1)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    for index in (0, 1):
        assert len(got[index]) == 20
        for grad in got[index]:
            np.testing.assert_array_equal(grad, expected[index])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_its_own_workers():
    """A process forked after a threaded gradient (multiprocessing's default on Linux) must not
    wait for the parent's workers, which did not come along."""
    built, theta = _problem("cartpole", "float32")
    problem = built.problem
    problem.threads = 2
    batch = built.train[:8]
    expected = problem.gradient(theta, batch, "R").grad
    with warnings.catch_warnings():  # Python 3.12 warns about forking a threaded process
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: exit 0 only with the parent's numbers
        try:
            ok = np.array_equal(problem.gradient(theta, batch, "R").grad, expected)
        finally:
            os._exit(0 if ok else 1)
    for _ in range(600):  # up to 60 s, then the child counts as hung
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung waiting for workers")
    assert os.waitstatus_to_exitcode(status) == 0


def test_threads_must_be_a_positive_integer():
    built, _ = _problem("cartpole", "float64")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="threads must be an integer >= 1"):
            built.problem.threads = bad
    with pytest.raises(ValueError, match="threads must be an integer >= 1, got 0"):
        Problem(built.problem.sim, built.controller, 5, threads=0)


def test_training_is_the_same_for_any_thread_count(tmp_path):
    settings = dict(poles=1, width=16, n_steps=10, time=0.1, n_data=24, batch_size=10, epochs=3,
                    checkpoint_every=2, zero_last=False, mode="C")
    records = []
    for threads in (1, 2):
        path = tmp_path / f"threads{threads}.h5"
        Trainer.new(preset("cartpole", **settings), str(path), threads=threads).run(quiet=True)
        records.append(read_run(path))
    one, two = records
    np.testing.assert_array_equal(one.checkpoint.theta, two.checkpoint.theta)
    for name in ("train_loss", "test_loss", "grad_size", "cosine_similarity"):
        np.testing.assert_array_equal(one.metrics[name], two.metrics[name])
    # and a run resumed on another thread count goes on with the same bits
    resumed = Trainer.resume(tmp_path / "threads1.h5", epochs=5, threads=3)
    resumed.run(quiet=True)
    full = tmp_path / "full.h5"
    Trainer.new(preset("cartpole", **{**settings, "epochs": 5}), str(full), threads=2).run(quiet=True)
    np.testing.assert_array_equal(read_run(tmp_path / "threads1.h5").checkpoint.theta,
                                  read_run(full).checkpoint.theta)
