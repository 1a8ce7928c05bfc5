"""The same numbers whatever the caller's BLAS thread setting."""





# ---- 1: the same numbers whatever the caller's BLAS threads -----------------------------------

def test_engine_runs_on_one_blas_thread_and_restores_the_callers_setting():
    from threadpoolctl import threadpool_info, threadpool_limits

    from stablebptt.adjoint.threads import one_blas_thread

    with threadpool_limits(2, user_api="blas"):
        with one_blas_thread():
            inside = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
        after = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    assert inside and set(inside) == {1}
    assert set(after) == {2}
