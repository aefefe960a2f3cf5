"""Cluster-quality scores against known values, the prototype gallery and the tidy rows."""

from __future__ import annotations

import pytest
import torch

from swavnb.evaluation.clusters import (
    COLUMNS,
    cluster_assignments,
    cluster_scores,
    gallery,
    kmeans_assignments,
    majority_names,
    prototype_scores,
    purity,
    score_rows,
)
from swavnb.method.augment import eval_transform
from swavnb.method.model import SwAVModel
from swavnb.method.usage import prototype_usage
from swavnb.study.results import collect_clusters, save_clusters, write_results


def test_a_perfect_assignment_scores_one_whatever_the_cluster_names():
    labels = torch.arange(10).repeat(30)  # (300,) ten balanced classes
    renamed = (labels * 7 + 3) % 10  # the same partition under other cluster indices
    assert cluster_scores(renamed, labels) == pytest.approx({"nmi": 1.0, "ari": 1.0, "purity": 1.0})


def test_one_cluster_and_a_random_assignment_score_chance():
    labels = torch.arange(10).repeat(300)  # 3,000 images, ten balanced classes
    one = cluster_scores(torch.zeros_like(labels), labels)
    assert one["nmi"] == pytest.approx(0.0, abs=1e-12) and one["ari"] == pytest.approx(
        0.0, abs=1e-12
    )
    assert one["purity"] == pytest.approx(0.1)  # the majority class's share
    random = cluster_scores(
        torch.randint(0, 10, (3000,), generator=torch.Generator().manual_seed(0)), labels
    )
    assert abs(random["ari"]) < 0.01 and random["nmi"] < 0.01


def test_purity_weights_each_cluster_by_its_size():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    clusters = torch.tensor(
        [0, 0, 1, 1, 1, 1]
    )  # cluster 0: {0, 0} pure; cluster 1: {0, 1, 1, 2}, majority 1
    assert purity(clusters, labels) == pytest.approx((2 + 2) / 6)
    with pytest.raises(ValueError, match="one cluster per label"):
        purity(clusters[:3], labels)


def test_kmeans_finds_well_separated_groups_and_is_seeded():
    centres = torch.eye(4, 16) * 10
    labels = torch.arange(4).repeat_interleave(25)
    features = centres[labels] + 0.1 * torch.randn(
        100, 16, generator=torch.Generator().manual_seed(1)
    )
    assigned = kmeans_assignments(features, 4, seed=0)
    assert cluster_scores(assigned, labels)["ari"] == pytest.approx(1.0)
    assert torch.equal(assigned, kmeans_assignments(features, 4, seed=0))
    with pytest.raises(ValueError, match="n_clusters"):
        kmeans_assignments(features, 101)


def test_gallery_rows_are_the_most_used_prototypes_and_their_top_scoring_images():
    scores = torch.tensor(
        [[0.9, 0.1, 0.0], [0.8, 0.7, 0.0], [0.2, 0.6, 0.0], [0.7, 0.0, 0.1], [0.0, 0.1, 0.5]]
    )  # nearest: 0, 0, 1, 0, 2 -> prototype 0 used 3 times
    labels = torch.tensor([4, 4, 5, 6, 7])
    rows = gallery(scores, labels, n_prototypes=2, n_images=2)
    assert [row["prototype"] for row in rows] == [0, 1]
    assert rows[0]["images"] == [0, 1] and rows[1]["images"] == [1, 2]  # highest scores first
    assert rows[0]["uses"] == 3 and rows[0]["majority"] == 4 and rows[0]["purity"] == 1.0
    assert rows[1]["purity"] == 0.5
    names = [f"class{i}" for i in range(8)]
    assert majority_names(rows, names)[0] == "class4 (2/2)"


def test_prototype_scores_are_the_models_first_view_scores():
    model = SwAVModel(feat_dim=8, n_prototypes=6).eval()
    images = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    scores = prototype_scores(model, images, batch_size=2, amp=False)
    assert scores.shape == (5, 6) and scores.dtype == torch.float32
    assert (
        scores.abs().max() <= 1 + 1e-5
    )  # cosine similarities of normalised embedding and prototypes
    with torch.no_grad():
        expected = model([eval_transform(images)])[1][0]  # one batch, the model's own forward
    assert torch.allclose(scores, expected, atol=1e-5)
    nearest = expected.argmax(dim=1)
    assert torch.equal(prototype_usage(scores), torch.bincount(nearest, minlength=6))
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        prototype_usage(scores[0])


def test_assignments_cut_every_encoder_by_kmeans_and_prototype_encoders_by_prototypes_too():
    labels = torch.arange(3).repeat_interleave(20)
    features = torch.eye(3, 8)[labels] * 10 + 0.1 * torch.randn(
        60, 8, generator=torch.Generator().manual_seed(0)
    )
    nearest = torch.arange(60) % 3  # another partition than the features' groups
    scores = torch.eye(3)[nearest] + 0.01  # (60, 3)
    both = cluster_assignments(features, scores, seed=0)
    assert list(both) == ["kmeans", "prototypes"]
    assert torch.equal(both["prototypes"], nearest)
    assert both["kmeans"].unique().numel() == 3  # as many k-means clusters as prototypes
    assert cluster_scores(both["kmeans"], labels)["ari"] == pytest.approx(1.0)
    alone = cluster_assignments(features, None, n_clusters=3, seed=0)
    assert list(alone) == ["kmeans"] and torch.equal(alone["kmeans"], both["kmeans"])
    with pytest.raises(ValueError, match="n_clusters"):
        cluster_assignments(features)


def test_the_csv_has_a_row_per_encoder_method_target_and_score(tmp_path):
    labels = {"fine": torch.arange(20), "superclass": torch.arange(20) // 5}
    for aug in ("swav", "scratch"):
        methods = {"kmeans": torch.arange(20) % 4}
        if aug != "scratch":
            methods["prototypes"] = torch.arange(20) // 5
        save_clusters(
            score_rows(methods, labels, "smoke", aug, 4),
            tmp_path / "runs" / "smoke" / aug / "probes",
        )
    collected = collect_clusters(tmp_path / "runs" / "smoke")
    assert list(collected.columns) == list(COLUMNS)
    assert len(collected) == (2 + 1) * 2 * 3  # (method per encoder) x targets x scores
    swav = collected[(collected["aug"] == "swav") & (collected["method"] == "prototypes")]
    assert swav.set_index(["target", "score"])["value"][("superclass", "nmi")] == pytest.approx(1.0)
    results = write_results("smoke", tmp_path / "runs", tmp_path / "results")
    assert (tmp_path / "results" / "smoke" / "clusters.csv").is_file()
    assert "## Cluster quality" in results.tables and "| scratch | – | – |" in results.tables
