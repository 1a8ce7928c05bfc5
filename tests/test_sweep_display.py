"""The sweep's progress display in a log file."""

import io
import time


from stablebptt.train.sweep import SweepDisplay


# ---- 10: sweep progress in a log file ---------------------------------------------------------

def test_sweep_progress_lines_at_a_steady_pace_in_a_log():
    stream = io.StringIO()  # not a terminal
    display = SweepDisplay(4, stream=stream, log_every=0.2)
    display.epoch("run_a", 3, 100)
    display.tick()
    assert stream.getvalue() == ""  # not due yet
    time.sleep(0.25)
    display.tick()
    display.tick()  # due once only
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and "0/4 done" in lines[0] and "run_a 3/100" in lines[0]
