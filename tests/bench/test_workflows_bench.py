"""The workflow benchmark runs end to end at a tiny scale on SQLite: enrollment,
the three simulated instants, the wake-up latency through a real worker process,
one line per figure, and nothing left behind."""

from __future__ import annotations

from bench import workflows


def test_the_command_prints_its_figures(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CAREPOST_MASTER_KEY_FILE", str(tmp_path / "master.key"))
    workflows.run(
        ["--scale", "40", "--samples", "3", "--database", f"sqlite:///{tmp_path / 'w.db'}"]
    )
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("workflows")]
    figures = " ".join(lines)
    for figure in (
        "enroll_seconds=",
        "ratio_to_",
        "transitions/s=",
        "worker_peak_rss_mb=",
        "rss_growth_mb=",
        "wake_latency_p99_s=",
        "cpu_s_per_1000_transitions workers=",
        "enroll_cpu_s",
        "last_step=update_field",
    ):
        assert figure in figures
    instants = [line for line in lines if "instant=" in line]
    assert len(instants) == 3
    # Every contact with an email walked all its steps (the latency samples were
    # moved on by the real worker, outside the count).
    total = next(line for line in lines if "transitions/s=" in line)
    done = int(total.split("transitions=")[1].split()[0])
    expected = int(total.split("expected=")[1].split()[0])
    assert 0 < done <= expected
