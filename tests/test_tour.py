"""The guided tour (docs/tour.py) runs to its end as a script and draws a picture at every step."""

from __future__ import annotations

import runpy
from pathlib import Path

TOUR = Path(__file__).resolve().parent.parent / "docs" / "tour.py"


def test_the_tour_runs_to_the_end(tmp_path, monkeypatch):
    monkeypatch.setenv("TOUR_OUT", str(tmp_path))
    runpy.run_path(str(TOUR), run_name="__main__")
    steps = sorted(p.name for p in tmp_path.glob("*.png"))
    assert len(steps) == 7 and steps[0].startswith("1_")
    for task in ("classify", "translate", "lm", "mlm", "recommend", "vision"):
        assert (tmp_path / task / "attention.html").is_file()
        assert list((tmp_path / task).glob("*.png"))
