"""What the study's notebooks call, in one import: ``from swavnb import notebook as nb``.

A notebook's import cell stays a few lines and every call says it comes from the package
(``nb.pretrain(...)``); ``nb.pretrain?`` in a kernel shows the module that defines it. Code outside
the notebooks imports from the defining modules, not from here.
"""

from swavnb.base.config import as_dict
from swavnb.base.device import hardware, pick_device
from swavnb.base.folder_lock import release
from swavnb.base.frontend import show_progress
from swavnb.base.layout import (
    CHECKPOINT,
    SCRATCH,
    encoder_checkpoint,
    figures_folder,
    resolve,
    run_folder,
    shown,
)
from swavnb.base.parameters import check_parameters
from swavnb.data.cifar import label_subset
from swavnb.evaluation.clusters import (
    cluster_assignments,
    gallery,
    prototype_scores,
    prototype_usage,
    score_rows,
)
from swavnb.evaluation.config import finetune_config
from swavnb.evaluation.export import export_encoder
from swavnb.evaluation.features import evaluation_data, frozen_features, knn_by_bn_stats
from swavnb.evaluation.finetuning import finetune
from swavnb.evaluation.folders import open_evaluation
from swavnb.evaluation.probes import nearest_neighbours, tsne_embedding
from swavnb.method.augment import AUGMENTATIONS, eval_transform
from swavnb.method.model import SwAVModel
from swavnb.method.sinkhorn import sinkhorn
from swavnb.pretraining.config import preset_changes, pretrain_config
from swavnb.pretraining.recipe import make_augmentation, training_images
from swavnb.pretraining.train import pretrain
from swavnb.study.curves import read_curves
from swavnb.study.results import COLUMNS, save_clusters, save_knn, write_results

__all__ = [
    # base: devices, the progress decision, folders, parameters, locks
    "hardware",
    "pick_device",
    "show_progress",
    "CHECKPOINT",
    "SCRATCH",
    "encoder_checkpoint",
    "figures_folder",
    "resolve",
    "run_folder",
    "shown",
    "check_parameters",
    "release",
    # data, method
    "label_subset",
    "AUGMENTATIONS",
    "eval_transform",
    "SwAVModel",
    "sinkhorn",
    # pretraining
    "as_dict",
    "finetune_config",
    "preset_changes",
    "pretrain_config",
    "make_augmentation",
    "pretrain",
    "training_images",
    # evaluation
    "evaluation_data",
    "frozen_features",
    "knn_by_bn_stats",
    "export_encoder",
    "finetune",
    "open_evaluation",
    "nearest_neighbours",
    "tsne_embedding",
    "cluster_assignments",
    "gallery",
    "prototype_scores",
    "prototype_usage",
    "score_rows",
    # study
    "read_curves",
    "COLUMNS",
    "save_clusters",
    "save_knn",
    "write_results",
]
