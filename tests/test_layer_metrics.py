"""Per-layer parity: every layer of the int8 C model traced on the host and
compared with the float model's same tensor, so users see where accuracy
is lost."""
import numpy as np

from exporter import export_model
from exporter.verify import format_layers, layer_metrics


def test_every_layer_is_close_in_its_own_steps(digits_cnn, digits, tmp_path):
    _, paths, _ = digits_cnn
    x_train, x_test, _, _ = digits
    report = export_model(paths["keras"], tmp_path / "out", calibration_data=x_train[:200])
    rows = layer_metrics(report, tmp_path / "out", x_test[:40])
    print("\n" + format_layers(rows))
    ops = [r["op"] for r in rows]
    assert ops[0] == "conv2d" and ops[-1] == "softmax" and "dense" in ops
    for r in rows:
        assert r["cosine"] > 0.99, r
        if r["dtype"] == "int8":  # int16 steps are 256x finer than what they inherit
            assert r["max_steps"] <= 8, r  # its own rounding plus what it inherits
    # the trace is the real computation: the last layer is the model output
    from exporter import host
    c = host.load(tmp_path / "out")
    last = rows[-1]
    assert np.isclose(last["max_abs"], np.abs(c.predict(x_test[:40]) - _float_out(report, x_test[:40])).max())


def _float_out(report, x):
    from exporter import interpret
    values = interpret.run(report.graph, x)
    return values[report.graph.outputs[0]].reshape(len(x), -1)
