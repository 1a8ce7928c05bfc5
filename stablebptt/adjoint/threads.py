"""Threads for the engine: one BLAS thread per computing thread, and a crew of workers that
compute a batch's chunks beside the calling thread. No Numba here."""

import os
import threading
from contextlib import contextmanager

_blas_libraries = None
_blas_lock = threading.Lock()
_blas_users = 0
_blas_saved = ()


@contextmanager
def one_blas_thread():
    """Run the block with every loaded BLAS library on one thread, then restore the caller's setting.

    The engine's matrix products go through this, so its numbers never depend on the caller's BLAS
    thread setting: OpenBLAS picks other kernels and summation orders for other thread counts
    (on AVX2 machines about one gradient entry in seven differs in the last bits). For products of
    this size one thread is also the fastest. The engine releases the GIL, so blocks of several
    Python threads may overlap: the setting is made by the first to enter and restored by the
    last to leave. The libraries are found once and set directly (a ``threadpool_limits`` on every
    call took ~35 us of a cart-pole gradient's ~1 ms).
    """
    global _blas_libraries, _blas_users, _blas_saved
    with _blas_lock:
        if _blas_libraries is None:
            import scipy.linalg.cython_blas  # noqa: F401  (the BLAS that Numba's np.dot calls)
            from threadpoolctl import ThreadpoolController

            _blas_libraries = [library for library in ThreadpoolController().lib_controllers
                               if library.user_api == "blas"]
        if _blas_users == 0:
            _blas_saved = [(library, library.get_num_threads()) for library in _blas_libraries]
            for library, threads in _blas_saved:
                if threads != 1:
                    library.set_num_threads(1)
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                for library, threads in _blas_saved:
                    if threads != 1:
                        library.set_num_threads(threads)
                _blas_saved = ()


class _Worker:
    """A thread that runs one function at a time for another thread. The hand-over is two locks,
    each released by one thread and acquired by the other: the cheapest wake-up Python has (a
    thread pool's futures, queue and conditions cost ~35 us more per cart-pole gradient, whose
    two chunks take ~0.6 ms each)."""

    def __init__(self):
        self._start, self._done = threading.Lock(), threading.Lock()
        self._start.acquire()
        self._done.acquire()
        self._task = self._outcome = None
        threading.Thread(target=self._serve, name="stablebptt", daemon=True).start()

    def _serve(self):
        while True:
            self._start.acquire()
            try:
                self._outcome = (self._task(), None)
            except BaseException as error:  # handed to the caller, who raises it
                self._outcome = (None, error)
            self._task = None
            self._done.release()

    def start(self, task):
        self._task = task
        self._start.release()

    def wait(self):
        """``(result, error)`` of the task, once it has ended: an interrupt of this wait is
        raised only after the task ended, so that no task outlives its call."""
        interrupt = None
        while True:
            try:
                self._done.acquire()
                break
            except BaseException as error:  # e.g. KeyboardInterrupt during the wait
                interrupt = error
        if interrupt is not None:
            raise interrupt
        return self._outcome


class _Crew:
    """``size`` workers that, with the calling thread, run one call's shares at the same time.
    One call at a time: ``busy`` is held for the call (a concurrent caller computes alone)."""

    def __init__(self, size):
        self.busy = threading.Lock()
        self.workers = [_Worker() for _ in range(size)]

    def run(self, tasks):
        """``[task() for task in tasks]``: the first in this thread, the others in the workers."""
        workers = self.workers[:len(tasks) - 1]
        for worker, task in zip(workers, tasks[1:]):
            worker.start(task)
        try:
            mine = tasks[0]()
        finally:  # every worker's share ends inside the caller's call, whatever happens
            outcomes = [worker.wait() for worker in workers]
        for _, error in outcomes:
            if error is not None:
                raise error
        return [mine] + [result for result, _ in outcomes]


_crews = {}
_crews_lock = threading.Lock()


def crew(size):
    """The process-wide crew of ``size`` workers, made on first use."""
    with _crews_lock:
        if size not in _crews:
            _crews[size] = _Crew(size)
        return _crews[size]


def _forget_crews():
    """In a forked child: the parent's workers did not come along, so make new ones on use."""
    global _crews_lock
    _crews.clear()
    _crews_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_crews)
