"""training_curves.png: the evaluation panel draws AP (or error) curves only, legend clear of title and curves."""
import json

from resdet.engine.plots import plot_training_curves, training_curves_figure

SUMMARY = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _records():
    records = [{"iteration": i, "total_loss": 2.0 / i, "loss_classifier": 1.0 / i, "lr": 0.01} for i in (10, 20, 30, 40)]
    for it in (20, 40):  # what a detection evaluation logs: 24 summary numbers plus inference timing
        ev = {f"{t}/{k}": float(it) for t in ("bbox", "segm") for k in SUMMARY}
        ev.update({"inference/images": 50, "inference/seconds": 3.2, "inference/images_per_second": 15.6})
        records.append({"iteration": it, **ev})
    return records


def test_evaluation_panel_draws_ap_curves_only(tmp_path):
    fig = training_curves_figure(_records(), title="run")
    losses, lr, evaluation = fig.axes
    assert sorted(line.get_label() for line in evaluation.get_lines()) == ["bbox/AP", "bbox/AP50", "segm/AP", "segm/AP50"]
    assert evaluation.get_ylabel() == "AP (%)"
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = evaluation.get_legend().get_window_extent(renderer)
    assert not legend.overlaps(evaluation.title.get_window_extent(renderer))
    assert not legend.overlaps(evaluation.get_window_extent(renderer))  # below the plotting area
    assert not legend.overlaps(fig._suptitle.get_window_extent(renderer))
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _records()))
    assert plot_training_curves(str(path), str(tmp_path / "curves.png")).endswith("curves.png")


def test_classification_curves_are_errors():
    records = [{"iteration": 1, "total_loss": 1.0}, {"iteration": 1, "test/top1_err": 50.0, "train/top1_err": 40.0,
                                                      "test/top5_err": 10.0, "test/seconds": 2.0}]
    evaluation = training_curves_figure(records).axes[2]
    assert sorted(l.get_label() for l in evaluation.get_lines()) == ["test/top1_err", "test/top5_err", "train/top1_err"]
    assert evaluation.get_ylabel() == "error (%)"
