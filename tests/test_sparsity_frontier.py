"""reproduce.results collects and renders the sparsity frontier of reproduce/sparsity_frontier.sh.

The runs directory is fabricated: each run is the files the collector reads (eval_val.json, the
checkpoint's run metadata, analysis/energy.json), with numbers chosen so the expected ratios are
exact by hand.
"""

import json

import pytest

from reproduce import results

ANN_MIOU = 0.8
# (run, lambda, MIoU, E_ANN / E_SNN, spikes per neuron of conv1 and conv2), in the manifest's order.
SPIKING = [
    ("deeplab_snn_lambda1e-2", 1e-2, 0.4, 9.0, (0.2, 0.1)),
    ("deeplab_snn_lambda0", 0.0, 0.72, 2.0, (1.5, 1.0)),
    ("deeplab_snn_lambda1e-3", 1e-3, 0.704, 3.0, (1.2, 0.5)),
    ("deeplab_snn_lambda3e-3", 3e-3, 0.6, 2.5, (1.0, 0.4)),  # beaten by 1e-3 in both: off the frontier
]


def write_run(
    runs, name, model, miou, penalty=0.0, energy=None, weighting="energy", target_rate=0.1, overwrite=False, warmup=None
):
    run_dir = runs / name
    metadata = run_dir / "checkpoints" / "100" / "run" / "metadata"
    metadata.parent.mkdir(parents=True, exist_ok=overwrite)
    config = {
        "model": {"name": model, "timesteps": 4, "width": 0.125},
        "dataset": {"name": "shapes"},
        "spikes": {"penalty": penalty, "weighting": weighting, "target_rate": target_rate},
    }
    if warmup is not None:  # runs from before the warm-up existed have no such field
        config["spikes"]["warmup_steps"] = warmup
    metadata.write_text(json.dumps({"config": config}))
    evaluation = {"step": 100, "miou": miou, "pixel_accuracy": 0.9, "num_images": 50}
    (run_dir / "eval_val.json").write_text(json.dumps(evaluation))
    if energy is not None:
        (run_dir / "analysis").mkdir()
        (run_dir / "analysis" / "energy.json").write_text(json.dumps(energy))


def energy_report(ratio, rates):
    layers = [{"name": "input", "output_spike_rate": None, "mac": True}]
    layers += [{"name": f"conv{i + 1}", "output_spike_rate": r, "mac": False} for i, r in enumerate(rates)]
    return {"ratio": ratio, "e_ann_pj": 100.0 * ratio, "e_snn_pj": 100.0, "layers": layers}


@pytest.fixture
def runs(tmp_path):
    entries = [("deeplab_ann", "deeplab")] + [(name, "spiking_deeplab") for name, *_ in SPIKING]
    entries += [("fcn_ann", "fcn"), ("fcn_snn_lambda0", "spiking_fcn"), ("fcn_snn_lambda1e-3", "spiking_fcn")]
    manifest = [{"run": name, "config": "configs/shapes_x.py", "overrides": [f"--o={name}"]} for name, _ in entries]
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(entry) + "\n" for entry in manifest))
    write_run(tmp_path, "deeplab_ann", "deeplab", ANN_MIOU)
    for name, penalty, miou, ratio, rates in SPIKING:
        write_run(tmp_path, name, "spiking_deeplab", miou, penalty, energy_report(ratio, rates))
    write_run(tmp_path, "fcn_ann", "fcn", 0.5)
    write_run(tmp_path, "fcn_snn_lambda0", "spiking_fcn", 0.3)  # evaluated, but no energy analysis
    timing = {"name": "train deeplab_ann", "seconds": 12.0, "resumed": False, "load_before": 1.0, "load_after": 2.0}
    (tmp_path / "timings.jsonl").write_text(json.dumps(timing) + "\n")
    return tmp_path


def test_collect_sparsity_orders_by_lambda_divides_by_the_twin_and_names_what_is_missing(runs):
    collected = results.collect_sparsity(runs)
    deeplab = collected["networks"]["deeplab"]
    assert [p["lambda"] for p in deeplab["points"]] == [0.0, 1e-3, 3e-3, 1e-2]
    assert [p["miou_to_ann"] for p in deeplab["points"]] == pytest.approx([0.9, 0.88, 0.75, 0.5])
    assert [p["energy_ratio"] for p in deeplab["points"]] == [2.0, 3.0, 2.5, 9.0]
    first = deeplab["points"][0]
    assert first["spikes_per_neuron"] == {"conv1": 1.5, "conv2": 1.0}  # the input has no spiking neurons
    assert first["overrides"] == ["--o=deeplab_snn_lambda0"] and first["run"] == "deeplab_snn_lambda0"
    assert deeplab["ann"]["miou"] == ANN_MIOU
    assert deeplab["paper"]["energy_ratio"] == 2.75
    assert deeplab["paper"]["miou_to_ann"] == pytest.approx(22.3 / 32.3)
    assert collected["missing"] == ["fcn_snn_lambda0", "fcn_snn_lambda1e-3"]
    assert collected["networks"]["fcn"]["points"] == []
    assert list(collected["timings"]) == ["train deeplab_ann"]


def test_the_frontier_drops_points_beaten_in_both_miou_and_energy(runs):
    points = results.collect_sparsity(runs)["networks"]["deeplab"]["points"]
    assert [p["lambda"] for p in results.frontier(points)] == [0.0, 1e-3, 1e-2]


def test_the_rendered_blocks_show_the_points_and_the_best_ratio_that_keeps_the_floor(runs):
    result = {**results.provenance("test"), **results.collect_sparsity(runs)}
    text = results.render_blocks(
        "<!-- results: sparsity-demo -->\n<!-- /results -->\n<!-- results: sparsity-summary -->\n<!-- /results -->\n",
        {"sparsity_demo": result},
    )
    assert "| DeepLab (ANN twin) | – | 0.800 | 1 | 1 | – |" in text
    assert "| Spiking-DeepLab | 0.001 | 0.704 | 0.88 | **3.00** | 0.50–1.20 |" in text
    assert "| demo | Spiking-DeepLab | 0.003 |" not in text  # off the frontier: not in the summary
    assert "| demo | Spiking-DeepLab | 0.01 | 0.400 | 0.50 | **9.00** |" in text
    # 9.0 keeps only half the twin's MIoU; 3.0 (lambda 1e-3) is the best that keeps 0.85 of it
    assert "twin's MIoU is 3.00 (λ = 0.001, 0.88 of it), at or above the paper's 2.75 at 0.69" in text
    assert "Spiking-FCN" not in text.split("<!-- results: sparsity-summary -->")[1]  # no FCN point was collected
    assert "Not finished: fcn_snn_lambda0, fcn_snn_lambda1e-3." in text
    assert "Relative MIoU drop under Gaussian noise" not in text  # no robustness analysis ran


def test_the_robustness_of_the_points_where_it_ran_goes_into_the_result_file_and_the_block(runs):
    report = {"sigmas": [0.0, 6.375, 25.5], "relative_drop": [0.0, 1.25, 30.0], "miou": [0.72, 0.71, 0.5]}
    (runs / "deeplab_snn_lambda0" / "analysis" / "robustness.json").write_text(json.dumps(report))
    result = {**results.provenance("test"), **results.collect_sparsity(runs)}
    points = {p["run"]: p for p in json.loads(json.dumps(result))["networks"]["deeplab"]["points"]}  # via JSON
    robustness = {"sigmas": [0.0, 6.375, 25.5], "relative_drop": [0.0, 1.25, 30.0]}
    assert points["deeplab_snn_lambda0"]["robustness"] == robustness
    assert "robustness" not in points["deeplab_snn_lambda1e-3"]
    text = results.render_blocks("<!-- results: sparsity-demo -->\n<!-- /results -->\n", {"sparsity_demo": result})
    assert "| network | λ | σ = 6.375 | σ = 25.5 |" in text
    assert "| Spiking-DeepLab | 0 | 1.2 % | 30.0 % |" in text


def test_the_command_writes_the_result_file_and_the_figure(runs, tmp_path_factory, capsys):
    out = tmp_path_factory.mktemp("out")
    results.write_sparsity(runs, str(out / "sparsity.json"), str(out / "figures" / "sparsity.png"))
    written = json.loads((out / "sparsity.json").read_text())
    assert written["generated_by"] == "reproduce/sparsity_frontier.sh"
    assert written["networks"]["deeplab"]["points"][1]["miou_to_ann"] == pytest.approx(0.88)
    assert (out / "figures" / "sparsity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| Spiking-DeepLab | 0 | 0.720 | 0.90 | **2.00** |" in capsys.readouterr().out


def add_rate_run(runs, name="deeplab_snn_rate0.05_lambda10", miou=0.68, ratio=4.0, warmup=None):
    entry = {"run": name, "config": "configs/shapes_x.py", "overrides": ["--config.spikes.weighting=rate"]}
    with open(runs / "runs.jsonl", "a") as manifest:
        manifest.write(json.dumps(entry) + "\n")
    report = energy_report(ratio, (0.9, 0.8))
    write_run(runs, name, "spiking_deeplab", miou, 10.0, report, "rate", 0.05, warmup=warmup)


def test_rate_weighted_points_follow_the_energy_points_labelled_with_their_target(runs):
    add_rate_run(runs)
    result = {**results.provenance("test"), **results.collect_sparsity(runs)}
    points = result["networks"]["deeplab"]["points"]
    assert [(p["weighting"], p["lambda"]) for p in points][-2:] == [("energy", 1e-2), ("rate", 10.0)]
    assert points[-1]["target_rate"] == 0.05 and "target_rate" not in points[0]
    text = results.render_blocks("<!-- results: sparsity-demo -->\n<!-- /results -->\n", {"sparsity_demo": result})
    assert "| Spiking-DeepLab | 10, rate > 0.05 | 0.680 | 0.85 | **4.00** | 0.80–0.90 |" in text
    # 4.0 at 0.85 of the twin now beats lambda 1e-3's 3.0 at 0.88 as the best that keeps the floor
    assert "twin's MIoU is 4.00 (λ = 10, rate > 0.05, 0.85 of it)" in text
    assert "| Spiking-DeepLab: conv | λ = 0 | λ = 0.001 | λ = 0.003 | λ = 0.01 | λ = 10, rate > 0.05 |" in text


def test_a_warmed_up_budget_follows_the_same_budget_without_and_names_its_warm_up(runs):
    add_rate_run(runs, "deeplab_snn_rate0.05_warmup150_lambda10", miou=0.7, ratio=3.5, warmup=150)
    add_rate_run(runs, warmup=0)
    points = results.collect_sparsity(runs)["networks"]["deeplab"]["points"]
    assert [p["run"] for p in points][-2:] == [
        "deeplab_snn_rate0.05_lambda10",
        "deeplab_snn_rate0.05_warmup150_lambda10",
    ]
    assert points[-1]["warmup_steps"] == 150 and "warmup_steps" not in points[-2]
    assert [results.budget_label(p) for p in points[-2:]] == ["10, rate > 0.05", "10, rate > 0.05, warm-up 150"]
    kinds = [results.budget_kind(p) for p in points[-3:]]  # the figure's lines
    assert kinds == ["energy weighting", "rate weighting, rate > 0.05", "rate weighting, rate > 0.05, warm-up 150"]


def test_extending_an_earlier_file_keeps_its_runs_that_the_directory_lacks_stamped(runs, tmp_path_factory):
    earlier = {
        **results.provenance("test"),
        **results.collect_sparsity(runs),
        "commit": "abc1234",
        "date": "2026-01-02",
    }
    for name in ("deeplab_snn_lambda1e-3", "deeplab_snn_lambda3e-3"):
        (runs / name / "eval_val.json").unlink()  # these two are lost; lambda 0 and 1e-2 are run again
    write_run(runs, "deeplab_ann", "deeplab", 0.5, overwrite=True)
    (runs / "deeplab_snn_lambda0" / "eval_val.json").write_text(
        json.dumps({"step": 100, "miou": 0.7, "pixel_accuracy": 0.9, "num_images": 50})
    )
    add_rate_run(runs)
    extended = results.collect_sparsity(runs, json.loads(json.dumps(earlier)))
    points = {p["run"]: p for p in extended["networks"]["deeplab"]["points"]}
    assert list(points) == [
        "deeplab_snn_lambda0",
        "deeplab_snn_lambda1e-3",
        "deeplab_snn_lambda3e-3",
        "deeplab_snn_lambda1e-2",
        "deeplab_snn_rate0.05_lambda10",
    ]
    assert points["deeplab_snn_lambda0"]["miou"] == 0.7 and "collected" not in points["deeplab_snn_lambda0"]
    stamp = {"commit": "abc1234", "date": "2026-01-02", "ann_miou": ANN_MIOU}
    assert points["deeplab_snn_lambda1e-3"]["collected"] == stamp
    # the twin is trained again (here 0.5): a kept point stays divided by the twin it was measured with
    assert points["deeplab_snn_lambda0"]["miou_to_ann"] == pytest.approx(0.7 / 0.5)
    assert points["deeplab_snn_lambda1e-3"]["miou_to_ann"] == pytest.approx(0.704 / ANN_MIOU)
    assert extended["missing"] == ["fcn_snn_lambda0", "fcn_snn_lambda1e-3"]  # missing there too: still missing
    result = {**results.provenance("test"), **extended}
    line = results.sparsity_settings_line(result)
    kept = "Kept from the collection of 2026-01-02 (commit abc1234): deeplab_snn_lambda1e-3, deeplab_snn_lambda3e-3"
    assert kept + " (their / ANN against that collection's twin, MIoU 0.800)." in line
    earlier["networks"]["deeplab"]["steps"] = 600
    with pytest.raises(results.cli.UserError, match="steps 600 there, 100 here"):
        results.collect_sparsity(runs, earlier)


def test_a_directory_without_the_manifest_is_refused_naming_it(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        results.write_sparsity(tmp_path, None, None)
    assert exit_info.value.code == 2
    assert "runs.jsonl: not found" in " ".join(capsys.readouterr().err.split())


def test_spikes_along_training_reads_the_training_lines_and_the_block_says_whether_they_fell(tmp_path):
    """Training lines carry the spike statistics; validation lines (and an ANN's lines) do not."""
    lines = {
        "deeplab": [(50, 0.9, 5.0, (4.0, 6.0)), (100, 1.0, 4.5, (3.0, 6.0))],
        "fcn": [(50, 0.8, 6.0, (6.0, 6.0)), (100, 0.8, 6.1, (6.0, 6.2))],
    }
    runs = {}
    for arch, records in lines.items():
        run_dir = tmp_path / f"{arch}_snn"
        run_dir.mkdir()
        text = ""
        for step, ratio, mean, (a, b) in records:
            spikes = {"spikes_per_neuron": mean, "spikes_per_neuron/conv1": a, "spikes_per_neuron/conv2": b}
            text += json.dumps({"step": step, "loss": 0.5, "energy_ratio": ratio, **spikes}) + "\n"
            text += json.dumps({"step": step, "miou": 0.5, "pixel_accuracy": 0.9}) + "\n"
        (run_dir / "metrics.jsonl").write_text(text)
        runs[f"{arch}_snn"] = {"along_training": results.spikes_along_training(run_dir)}

    assert runs["deeplab_snn"]["along_training"] == [
        {"step": 50, "energy_ratio": 0.9, "spikes_per_neuron": 5.0, "layers": {"conv1": 4.0, "conv2": 6.0}},
        {"step": 100, "energy_ratio": 1.0, "spikes_per_neuron": 4.5, "layers": {"conv1": 3.0, "conv2": 6.0}},
    ]
    block = results.paper_spikes_along_training({"paper_settings": {"runs": runs}})
    assert "| 100 | 4.50 | 1.00 | 6.10 | 0.80 |" in block
    # DeepLab: 5.0 -> 4.5 is -10 %, conv1 -25 %, conv2 0 %; FCN: 6.0 -> 6.1 is +1.7 %.
    assert "Spiking-DeepLab's mean fell (5.00 at step 50, 4.50 at step 100; by layer -25% to +0%)" in block
    assert "Spiking-FCN's mean stayed within 5 % (6.00 at step 50, 6.10 at step 100; by layer +0% to +3%)" in block
