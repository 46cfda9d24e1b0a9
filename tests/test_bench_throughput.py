"""bench/throughput.py's memory part: ``aevision pretrain`` on MNIST, peak RSS of the whole process."""

from __future__ import annotations

import pytest

from conftest import fake_mnist


def test_pretrain_mnist_part_reports_the_runs_peak_rss(bench_script, tmp_path):
    fake_mnist(tmp_path, n_train=300, n_test=20)
    result = bench_script("throughput").pretrain_mnist(str(tmp_path))
    assert result["train_images"] == 270  # the default 10% validation split is carved off
    assert result["epochs"] == 3
    # torch alone holds over 100 MiB; a number in KiB or bytes read as MiB would be far off
    assert 100 < result["peak_rss_mib"] < 8192
    assert result["under_1.5_GB"] == (result["peak_rss_mib"] * 2**20 < 1.5e9)


def test_training_flops_follow_the_peers_convention(bench_script):
    """3 x 2 x MACs of the dense and conv layers: the peers' figures for M1, M2, M3."""
    tp = bench_script("throughput")
    peers = bench_script("peers")
    got = {m: peers.train_mflop(tp.build(m), tp.shape_of(m)) for m in ("M1", "M2", "M3")}
    assert got == {"M1": 2.408, "M2": 4.99, "M3": 551.289}
    # the peers' plain conv is aevision's default conv, layer for layer
    assert peers.train_mflop(peers.peer_model("conv"), (3, 32, 32)) == peers.train_mflop(
        tp.build("conv"), (3, 32, 32))


def test_the_best_variant_and_the_comparison_with_the_peers(bench_script):
    tp = bench_script("throughput")
    runs = {"fp32": {"images_per_s": 100.0, "precision": "32-true", "train_mflop_per_image": 10.0},
            "bf16": {"images_per_s": 180.0, "precision": "bf16-mixed", "train_mflop_per_image": 10.0},
            "bf16+channels_last": {"error": "crashed"}}
    best = tp.best_variant(runs)
    assert best["precision"] == "bf16-mixed" and best["images_per_s"] == 180.0
    assert best["fp32_images_per_s"] == 100.0 and best["variants"] is runs
    result = {"M3": best}
    ceiling = [{"fp32": {"peak": 200.0}, "bf16": {"peak": 800.0}},
               {"fp32": {"peak": 180.0}, "bf16": {"peak": 900.0}}]
    peer_runs = {"matmul_ceiling": ceiling, "M3": {
        "torch": {"images_per_s": 90.0}, "torch_bf16": {"images_per_s": 120.0},
        "keras": {"images_per_s": 60.0}, "keras_best": {"images_per_s": 80.0},
        "keras_bf16": {"error": "no tensorflow"}}}
    tp.compare(result, peer_runs)
    assert result["matmul_ceiling_gflops"] == {"fp32": 190.0, "bf16": 850.0}  # medians
    m3 = result["M3"]
    assert (m3["best_peer"], m3["best_peer_images_per_s"]) == ("torch_bf16", 120.0)
    assert m3["ratio_vs_best_peer"] == 1.5
    assert m3["keras_best_fp32_images_per_s"] == 80.0
    assert m3["bf16_ceiling_fraction"] == round(180 * 10 / 1e3 / 850, 3)
    assert "keras_bf16" not in m3["same_run_peers"]


def test_quality_compares_fp32_and_bf16_runs_of_one_seed(bench_script, monkeypatch, one_thread):
    monkeypatch.setenv("AEVISION_BENCH_QUICK", "1")
    result = bench_script("throughput").quality("M1")
    assert result["n"] == 512 and result["epochs"] == 1
    assert 0 < result["val_loss_fp32"] < 1 and 0 < result["val_loss_bf16"] < 1
    assert result["loss_ratio_bf16_vs_fp32"] == round(result["val_loss_bf16"] / result["val_loss_fp32"], 4)
    # one seed, one data order: two runs at the same precision agree exactly
    assert bench_script("throughput").quality("M1")["val_loss_fp32"] == result["val_loss_fp32"]


def test_quality_over_seeds_reports_the_mean_ratio_and_its_spread(bench_script, monkeypatch):
    bench = bench_script("throughput")
    ratio = {0: 1.02, 1: 0.98, 2: 1.03}
    monkeypatch.setattr(bench, "quality", lambda name, n, epochs, seed: {
        "n": n, "epochs": epochs, "batch": 128, "seed": seed, "loss_ratio_bf16_vs_fp32": ratio[seed]})
    got = bench.quality_over_seeds("M3", 1000, 4, [0, 1, 2])
    assert got["loss_ratio_bf16_vs_fp32"] == 1.01 and got["loss_ratio_std"] == 0.0265
    assert got["steps_per_run"] == 4 * 8 and [r["seed"] for r in got["runs"]] == [0, 1, 2]
    assert bench.parse_args(["--quality-seeds", "0,1,2"]).quality_seeds == [0, 1, 2]


def test_the_whole_run_hands_the_probe_sizes_to_its_child(bench_script, monkeypatch):
    bench = bench_script("throughput")
    calls = []
    monkeypatch.setattr(bench, "child", lambda args: calls.append(args) or {})
    monkeypatch.setattr(bench, "run_models", lambda *a: None)
    a = bench.parse_args(["--quality", "--probe-limit", "5000", "--probe-epochs", "2", "--data-root", "/d"])
    bench.whole_run(a)
    assert ["--part", "probe", "--data-root", "/d", "--probe-limit", "5000", "--probe-epochs", "2"] in calls


def test_the_gpu_run_measures_every_model_per_variant_and_saves_after_each(bench_script, monkeypatch):
    """Variants outer (the compiled ones last, the ones a --budget-s drops), a summary against the
    plain loops of every variant, and the file saved after every child."""
    bench = bench_script("throughput")
    calls, saved = [], []
    ceiling = {"fp32": {"peak": 400e3}, "bf16": {"peak": 800e3}}
    speed = {"fp32": 100.0, "bf16": 300.0, "bf16+compile": 200.0}

    def child(args):
        calls.append(args)
        if args[:2] == ["--part", "matmul"]:
            return ceiling
        v = args[args.index("--variant") + 1]
        return {"images_per_s": speed[v], "plain_torch_images_per_s": speed[v] / 2 + (v == "fp32") * 250,
                "precision": v, "train_mflop_per_image": 8.0}

    monkeypatch.setattr(bench, "child", child)
    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(bench.common, "machine", lambda **kw: {})
    a = bench.parse_args(["--device", "cuda", "--models", "M1,M3", "--models-only"])
    result = bench.whole_run(a, saved.append)
    order = [(c[c.index("--variant") + 1], c[c.index("--model") + 1]) for c in calls if "--model" in c]
    assert order == [("fp32", "M1"), ("fp32", "M3"), ("bf16", "M1"), ("bf16", "M3"),
                     ("bf16+compile", "M1"), ("bf16+compile", "M3")]
    assert len(saved) == 6 and not saved[0]["complete"] and result["complete"]
    m3 = result["M3"]
    assert m3["images_per_s"] == 300.0 and m3["fp32_images_per_s"] == 100.0
    assert (m3["best_peer"], m3["ratio_vs_best_peer"]) == ("torch_fp32", 1.0)  # plain fp32: 300
    assert m3["bf16_ceiling_fraction"] == round(300 * 8 / 1e3 / 800e3, 3)
    assert result["matmul_ceiling_gflops"] == {"fp32": 400e3, "bf16": 800e3}
    # past the budget, runs are recorded as skipped, not started
    calls.clear()
    monkeypatch.setattr(bench.time, "monotonic", iter(range(0, 1000, 100)).__next__)
    result = bench.whole_run(bench.parse_args(["--device", "cuda", "--models", "M1,M3", "--models-only",
                                               "--budget-s", "250"]))
    assert len([c for c in calls if "--model" in c]) == 2
    assert result["M1"]["variants"]["bf16+compile"] == {"skipped": "past --budget-s 250"}


def test_the_torch_peers_run_as_written_and_with_the_fused_optimizer(bench_script, one_thread):
    bench, peers = bench_script("throughput"), bench_script("peers")
    assert bench.parse_args(["--peer", "torch_bf16_fused", "--model", "M1"]).peer == "torch_bf16_fused"
    runs = {label: peers.torch_peer("M1", 256, 128, 2, *flags) for label, flags in peers.TORCH_PEERS.items()}
    assert [r["peer"] for r in runs.values()] == [
        "torch-fp32", "torch-bf16-autocast", "torch-fp32-fused-adam", "torch-bf16-autocast-fused-adam"]
    assert all(r["images_per_s"] > 0 and len(r["epoch_times_s"]) == 2 for r in runs.values())


def test_a_model_run_alternates_both_loops_for_its_rounds(bench_script, monkeypatch, one_thread):
    tp = bench_script("throughput")
    assert [tp.round_count(m, tp.Variant(), False) for m in ("M1", "M2", "conv", "M3")] == [5, 5, 3, 2]
    assert tp.round_count("M1", tp.CPU_VARIANTS["bf16+compile"], False) == 1
    monkeypatch.setenv("AEVISION_BENCH_QUICK", "1")
    res = tp.run_model("M1", "cpu", "bf16")
    assert len(res["rounds"]["plain"]) == len(res["rounds"]["aevision"]) == 1  # quick: one round
    assert res["images_per_s"] > 0 and res["ratio_vs_plain_torch"] > 0
    one_round = res["images_per_s"] / res["plain_torch_images_per_s"]
    assert res["ratio_vs_plain_torch_paired"] == pytest.approx(one_round, abs=2e-3)


def test_the_paired_ratio_is_the_median_of_each_rounds_ratio(bench_script):
    tp = bench_script("throughput")
    rounds = {"plain": [38.0, 38.0, 40.0, 52.0, 39.0], "aevision": [38.0, 36.0, 39.0, 39.0, 43.0]}
    assert tp.paired_ratio(rounds) == 0.975  # ratios 1, 0.947, 0.975, 0.75, 1.103; a 52 alone moves max/max
    assert round(max(rounds["aevision"]) / max(rounds["plain"]), 3) == 0.827


def test_the_best_peers_run_again_with_glibc_keeping_freed_memory(bench_script, monkeypatch):
    bench, peers = bench_script("throughput"), bench_script("peers")
    calls = []
    monkeypatch.setattr(bench, "json_child", lambda py, script, args, env=None: (
        calls.append((args, env)) or {"images_per_s": 1.0}))
    monkeypatch.setattr(peers, "keras_peer", lambda tf, name, args, *rest, env=None: (
        calls.append((args, env)) or {"images_per_s": 2.0}))
    out = bench.peer_results("M1", "/tf/python")
    assert set(out) == {*peers.TORCH_PEERS, *peers.KERAS_RUNS, *peers.MALLOC_PEERS}
    tuned = [(args, env) for args, env in calls if env is not None]
    assert tuned == [(["--peer", "torch_bf16_fused", "--model", "M1"], peers.MALLOC_ENV)] * 5 + [
        (peers.KERAS_RUNS["keras_best"], peers.MALLOC_ENV)] * 5  # as many tries as aevision's loops
    assert out["torch"]["rounds_images_per_s"] == [1.0] * 5
    assert peers.MALLOC_ENV == {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "2147483647"}
    ours = {"images_per_s": 3.0, "train_mflop_per_image": 1.0}
    bench.against_peers(ours, {"keras_best": 2.0, "keras_best_malloc": 2.5}, {"bf16": 1.0, "fp32": 1.0})
    assert ours["keras_best_fp32_images_per_s"] == 2.5  # the tuned Keras is a fp32 Keras too


def test_a_torch_peer_says_when_its_process_keeps_freed_memory(bench_script, monkeypatch, one_thread):
    peers = bench_script("peers")
    for k, v in peers.MALLOC_ENV.items():
        monkeypatch.setenv(k, v)
    assert peers.torch_peer("M1", 256, 128, 2, True, True)["peer"] == \
        "torch-bf16-autocast-fused-adam-glibc-keep-freed-memory"


def test_a_peer_counts_with_its_fastest_run(bench_script):
    bench = bench_script("throughput")
    speeds = iter([3.0, 5.0, 4.0])
    best = bench.best_of(lambda: {"images_per_s": next(speeds)}, 3)
    assert best == {"images_per_s": 5.0, "rounds_images_per_s": [3.0, 5.0, 4.0]}
    assert bench.best_of(lambda: {"error": "boom"}, 2) == {"error": "boom"}
