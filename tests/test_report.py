"""`export-model --report FILE.html`: a self-contained page with the layer
table, totals, warnings and the RAM/flash plots, rendered by a real browser;
and the calibration progress bar on stderr."""
import base64
import io
import json
import re
import subprocess
import types
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from conftest import require_tool
from test_cli import one_sentence_error, run_cli

TAB_BLUE, TAB_GREEN = (31, 119, 180), (44, 160, 44)  # matplotlib's line and bar colours


@pytest.fixture(scope="module")
def cnn(keras, tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    L = keras.layers
    m = keras.Sequential([keras.Input((12, 12, 1)), L.Conv2D(8, 3, activation="relu", name="conv_a"),
                          L.MaxPooling2D(2), L.Conv2D(16, 3, activation="relu", name="conv_b"),
                          L.Flatten(), L.Dense(24, activation="relu"), L.Dense(4),
                          L.Softmax()])
    m.save(d / "cnn.keras")
    np.save(d / "cal.npy", np.random.default_rng(1).random((32, 12, 12, 1), np.float32))
    return d


@pytest.fixture(scope="module")
def exported(cnn, tmp_path_factory):
    """One export with --report and --json together."""
    d = tmp_path_factory.mktemp("exported")
    r = run_cli(cnn / "cnn.keras", "--calibration", cnn / "cal.npy", "-o", d / "out",
                "--report", d / "r.html", "--json", d / "r.json", cwd=d)
    assert r.returncode == 0, r.stderr
    return d


class Page(HTMLParser):
    """The table cells, the images' sources and every URL-ish attribute."""

    def __init__(self, text):
        super().__init__()
        self.rows, self.imgs, self.refs, self.totals, self._cell, self._in = [], [], [], "", None, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "img":
            self.imgs.append(a)
        self._in = a.get("id", self._in) if tag == "p" else self._in

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.rows[-1].append(self._cell.strip())
            self._cell = None
        elif tag == "p":
            self._in = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._in == "totals":
            self.totals += data


def test_report_has_table_totals_and_both_plots(exported):
    page = Page((exported / "r.html").read_text())
    assert page.rows[0] == ["layer", "type", "output", "params", "MACs", "weight B",
                            "arena live B"]
    names = [row[0] for row in page.rows[1:]]
    assert "conv_a" in names and "conv_b" in names
    assert {img["id"] for img in page.imgs} == {"arena-plot", "flash-plot"}
    # Self-contained: every reference is an embedded image.
    assert page.refs and all(ref.startswith("data:image/png;base64,") for ref in page.refs)
    for img in page.imgs:
        png = Image.open(io.BytesIO(base64.b64decode(img["src"].split(",", 1)[1])))
        assert png.format == "PNG" and png.width > 300 and png.height > 300


def test_json_and_report_agree(exported):
    data = json.loads((exported / "r.json").read_text())
    page = Page((exported / "r.html").read_text())
    rows = page.rows[1:]
    assert len(rows) == len(data["layers"])
    for row, layer in zip(rows, data["layers"]):
        assert row[0] == layer["name"] and row[1] == layer["keras_class"]
        assert [int(c) for c in row[3:]] == [layer["params"], layer["macs"],
                                            layer["weight_bytes"], layer["live_bytes"]]
    totals = [int(n) for n in re.findall(r"(\d+) (?:params|MACs|B)", page.totals)]
    assert totals == [data["params"], data["macs"], data["weight_bytes"], data["arena_bytes"]]
    assert data["arena_bytes"] >= max(l["live_bytes"] for l in data["layers"]) > 0
    assert sum(l["weight_bytes"] for l in data["layers"]) == data["weight_bytes"]


def test_report_is_deterministic_and_keeps_warnings(keras, tmp_path):
    """Two exports give the same bytes; a warning reaches the page, escaped."""
    m = keras.Sequential([keras.Input((10, 3)), keras.layers.Dense(4, name="per<pos>")])
    m.save(tmp_path / "nd.keras")
    pages = []
    for k in range(2):
        r = run_cli(tmp_path / "nd.keras", "--dtype", "float32", "-o", tmp_path / f"o{k}",
                    "--report", tmp_path / f"r{k}.html", "-q")
        assert r.returncode == 0, r.stderr
        pages.append((tmp_path / f"r{k}.html").read_bytes())
    assert pages[0] == pages[1]
    text = pages[0].decode()
    assert "each of the 10 positions" in text and "per&lt;pos&gt;" in text


def test_report_unwritable_is_one_sentence_exit_2(cnn, tmp_path):
    r = run_cli(cnn / "cnn.keras", "--dtype", "float32", "-o", tmp_path / "out",
                "--report", tmp_path / "no" / "such" / "dir" / "r.html")
    assert r.returncode == 2
    assert "cannot write report" in one_sentence_error(r)


def colour_pixels(img: Image.Image, rgb, tol=40) -> int:
    a = np.asarray(img.convert("RGB"), np.int32)
    return int((np.abs(a - np.array(rgb)).max(axis=2) <= tol).sum())


def test_report_renders_in_headless_chromium(exported, tmp_path):
    chromium = require_tool("chromium", "apt-get install chromium")
    shot = tmp_path / "shot.png"
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
           "--window-size=1200,1600", (exported / "r.html").resolve().as_uri()]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.exists(), f"chromium wrote no screenshot (exit {r.returncode}):\n{r.stderr}"
    img = Image.open(shot).convert("RGB")
    assert img.size == (1200, 1600)
    a = np.asarray(img)
    assert (a.min(axis=2) < 240).mean() > 0.03, "the page is (nearly) blank"
    assert len(np.unique(a.reshape(-1, 3), axis=0)) > 200, "too few colours for text and plots"
    # The plots themselves: the arena step line and the flash bars.
    assert colour_pixels(img, TAB_BLUE) > 500
    assert colour_pixels(img, TAB_GREEN) > 500


# --- the calibration progress bar ---------------------------------------------------------

@pytest.fixture
def slow_clock(monkeypatch):
    """quantize sees a clock that advances 2 s per reading: calibration is 'slow'."""
    from exporter import quantize
    ticks = iter(range(0, 10**6, 2))
    monkeypatch.setattr(quantize, "time", types.SimpleNamespace(monotonic=lambda: next(ticks)))
    monkeypatch.setattr(quantize, "PROGRESS", None)
    return quantize


def small_graph(keras):
    from exporter.export import lower
    m = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, activation="relu")])
    return lower(m)[0]


def test_progress_when_slow_and_enabled(keras, slow_clock, monkeypatch, capsys):
    monkeypatch.setenv("K2M_PROGRESS", "1")
    x = np.random.default_rng(0).normal(size=(200, 5)).astype(np.float32)
    graph = small_graph(keras)
    ranges = slow_clock.calibrate(graph, x)
    err = capsys.readouterr().err
    assert "\rcalibrating: 1/4 chunks" in err and err.endswith("\rcalibrating: 4/4 chunks\n")
    monkeypatch.setattr(slow_clock, "PROGRESS", False)  # what --quiet sets
    assert slow_clock.calibrate(graph, x) == ranges
    assert capsys.readouterr().err == ""


def test_no_progress_when_fast_or_not_a_tty(keras, slow_clock, monkeypatch, capsys):
    x = np.zeros((200, 5), np.float32)
    monkeypatch.delenv("K2M_PROGRESS", raising=False)
    slow_clock.calibrate(small_graph(keras), x)       # slow, but stderr is not a terminal
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("K2M_PROGRESS", "1")
    monkeypatch.setattr(slow_clock, "time", types.SimpleNamespace(monotonic=lambda: 0.0))
    slow_clock.calibrate(small_graph(keras), x)       # enabled, but fast
    assert capsys.readouterr().err == ""


def test_quiet_cli_never_shows_progress_and_files_do_not_change(cnn, slow_clock, monkeypatch,
                                                                tmp_path, capsys):
    from exporter import cli
    monkeypatch.setenv("K2M_PROGRESS", "1")
    outs, errs = [], []
    for k, quiet in enumerate([[], ["-q"]]):
        out = tmp_path / f"o{k}"
        assert cli.main([str(cnn / "cnn.keras"), "--calibration", str(cnn / "cal.npy"),
                         "-o", str(out), *quiet]) == 0
        errs.append(capsys.readouterr().err)
        outs.append({p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()})
    assert "calibrating: 1/1 chunks" in errs[0] and "calibrating" not in errs[1]
    assert outs[0] == outs[1]
