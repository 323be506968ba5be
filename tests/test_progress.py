"""Progress lines: rate and ETA in a log at most once per interval and at the end; a Keras
progress bar on a terminal."""

from cear_tf.common import progress


def test_log_lines_have_rate_and_eta_and_respect_the_interval(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(progress.time, "time", lambda: clock[0])
    logged = []
    monkeypatch.setattr(progress.logging, "info", lambda fmt, *args: logged.append(fmt % args))
    bar = progress.Progress(10, "certify", interval=60, terminal=False)
    clock[0] += 30
    bar.update(2.5)  # within the interval: no line
    clock[0] += 40
    bar.update(3.5)  # 70 s in: a line, 0.05 images/s, 6.5 left -> ETA 130 s
    clock[0] += 10
    bar.update(4)  # 10 s after the last line: none
    clock[0] += 120
    bar.update(10)  # the end: always a line
    assert logged == ["certify: 3.5/10 images, 0.05/s, ETA 130s",
                     "certify: 10.0/10 images, 0.05/s, ETA 0s"]


def test_terminal_bar_counts_fractional_work(capsys):
    bar = progress.Progress(4, "certify", terminal=True)
    bar.update(0.5)
    bar.update(4)
    out = capsys.readouterr().out
    assert "4/4" in out and "image" in out
