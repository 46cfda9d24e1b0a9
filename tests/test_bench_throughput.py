"""bench/throughput.py's memory part: ``aevision pretrain`` on MNIST, peak RSS of the whole process."""

from __future__ import annotations

from conftest import fake_mnist


def test_pretrain_mnist_part_reports_the_runs_peak_rss(bench_script, tmp_path):
    fake_mnist(tmp_path, n_train=300, n_test=20)
    result = bench_script("throughput").pretrain_mnist(str(tmp_path))
    assert result["train_images"] == 270  # the default 10% validation split is carved off
    assert result["epochs"] == 3
    # torch alone holds over 100 MiB; a number in KiB or bytes read as MiB would be far off
    assert 100 < result["peak_rss_mib"] < 8192
    assert result["under_1.5_GB"] == (result["peak_rss_mib"] * 2**20 < 1.5e9)
