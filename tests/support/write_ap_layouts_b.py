"""Write tests/data/ap_layouts/<ap_key>__<architecture>.json for FlyingBird, RobustBird, RST, MAD and Li20.

Run ``python -m tests.support.write_ap_layouts_b`` from the repository root; the files are committed. The tensor
lists come from the reference modules in ``reference_models_b`` (their ``state_dict()``), transformed the way each
AP's saving code transforms them (torch.nn.utils.prune reparametrization, DataParallel's ``module.`` prefix); the
other facts are stated here once per AP, each with the source it was read from.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from tests.support import reference_models_b as ref

OUT = Path(__file__).resolve().parents[1] / "data" / "ap_layouts"
SPARSITIES = (90, 95, 99)
# Edge-popup's --prune-rate is the kept fraction, typed on the command line for each benchmark sparsity.
RST_PRUNE_RATE = {90: 0.1, 95: 0.05, 99: 0.01}

REPO_FB = "VITA-Group/Sparsity-Win-Robust-Generalization@6e9a862"
REPO_RST = "GATECH-EIC/Robust-Scratch-Ticket@HEAD(2022-02-13)"
REPO_MAD = "ByungKwanLee/Masking-Adversarial-Damage@HEAD(2023-03-13)"
REPO_LI20 = "boosting-ticket/ticket_robust@HEAD(2019-11-15)"
REPO_APB = "pralab/AdversarialPruningBenchmark@0ae46e7"


def owner(model: nn.Module, key: str) -> tuple[nn.Module, str]:
    """The module holding state-dict entry *key* and the entry's own name."""
    path, _, name = key.rpartition(".")
    return (model.get_submodule(path) if path else model), name


def role_of(module: nn.Module, name: str) -> str:
    """The layout-format role of entry *name* of *module*."""
    if isinstance(module, ref.ChannelNormalize):
        return {"mean": "norm_mean", "std": "norm_std"}[name]
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return {"weight": "bn_weight", "bias": "bn_bias", "running_mean": "bn_running_mean",
                "running_var": "bn_running_var", "num_batches_tracked": "bn_num_batches_tracked"}[name]
    return {"weight": "weight", "weight_orig": "weight", "bias": "bias", "scores": "scores",
            "mask_weight": "softplus_mask", "mask_bias": "softplus_mask", "weight_mask": "mask"}[name]


def is_prunable(module: nn.Module) -> bool:
    return isinstance(module, (nn.Conv2d, nn.Linear))


def tensor_entries(model: nn.Module, prefix: str, pruned: Callable[[nn.Module, str], bool]) -> list[list[Any]]:
    """Every state-dict entry of *model*, in order, as [key, shape, dtype, meta] with *prefix* prepended."""
    entries: list[list[Any]] = []
    for key, value in model.state_dict().items():
        module, name = owner(model, key)
        meta: dict[str, Any] = {"role": role_of(module, name)}
        base = key.rpartition(".")[0]
        dot = "." if base else ""
        if name == "scores":
            meta["of"] = prefix + base + dot + "weight"
        elif name == "mask_weight":
            meta["of"] = prefix + base + dot + "weight"
        elif name == "mask_bias":
            meta["of"] = prefix + base + dot + "bias"
        elif name == "weight_mask":
            meta["of"] = prefix + base + dot + "weight_orig"
            meta["stored_dtype"] = "float32"
        if pruned(module, name):
            meta["pruned"] = True
        entries.append([prefix + key, list(value.shape), str(value.dtype).removeprefix("torch."), meta])
    return entries


def weights_of_conv_and_linear(module: nn.Module, name: str) -> bool:
    return is_prunable(module) and name in ("weight", "weight_orig")


def mad_pruned(module: nn.Module, name: str) -> bool:
    """MAD zeroes conv weights globally and, in the classifier, weight and bias entries row by row."""
    return is_prunable(module) and name in ("weight", "bias")


def prune_reparametrized(model: nn.Module) -> nn.Module:
    """What RobustBird's prune_unstructured leaves in the model: torch's global L1 pruning of every Conv2d and
    Linear weight, never removed, so each holds ``weight_orig`` (parameter) and ``weight_mask`` (buffer)."""
    targets = [(m, "weight") for m in model.modules() if is_prunable(m)]
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=0.9)
    return model


def rst_kept_counts(model: nn.Module, prefix: str) -> dict[str, dict[str, int]]:
    """Per scored layer and sparsity: how many weights the edge-popup forward keeps."""
    counts: dict[str, dict[str, int]] = {}
    for sparsity in SPARSITIES:
        rate = RST_PRUNE_RATE[sparsity]
        counts[str(sparsity)] = {prefix + key.removesuffix(".scores") + ".weight": ref.kept_count(value.numel(), rate)
                                 for key, value in model.state_dict().items() if key.endswith(".scores")}
    return counts


FB_SOURCES = [
    f"{REPO_FB} models/preactivate_resnet.py PreActResNet/PreActBlock (ResNet18) and models/vgg.py VGG/vgg16_bn: "
    "architecture, attribute names, normalize = advertorch NormalizeByChannelMeanStd (buffers mean, std)",
    f"{REPO_FB} utils.py setup_dataset_models: model.normalize = NormalizeByChannelMeanStd(CIFAR-10 mean/std) "
    "(replaces the attribute in place, so the registration order is unchanged)",
    f"{REPO_FB} main_adv.py: model.cuda() after torch.cuda.set_device(args.gpu); checkpoint_state = {{best_sa, "
    "best_ra, epoch, state_dict, optimizer, scheduler (MultiStepLR), iter_step, result}} then .update(mask_info); "
    "utils.py save_checkpoint: torch.save to checkpoint.pth.tar, copied to model_SA_best/model_RA_best.pth.tar",
    f"{REPO_FB} sparselearning/core.py Masking.add_module/apply_mask/get_info_resume: a mask for every 4-D and 2-D "
    "parameter (all convs incl. first and shortcut, the linear weight; biases removed), applied as weight.data *= "
    "mask; init 'igq' (sparselearning/igq.py) spreads the global density over layers",
    f"{REPO_APB} utils/utils.py load_model and models/flyingbird.py",
]
RB_SOURCES = [
    f"{REPO_FB} Robust-Bird/models/preact_resnet.py and Robust-Bird/models/vgg.py (same layers as the FlyingBird "
    "models)",
    f"{REPO_FB} Robust-Bird/train_eb.py: model.normalize = NormalizeByChannelMeanStd(...); model.cuda() after "
    "torch.cuda.set_device(0); stage 2 saves {best_sa, best_ra, epoch, state_dict, optimizer, scheduler, result} "
    "with utils/function.py save_checkpoint (checkpoint.pth.tar, model_SA_best/model_RA_best.pth.tar)",
    f"{REPO_FB} Robust-Bird/utils/function.py prune_unstructured: prune.global_unstructured over (m, 'weight') of "
    "every Conv2d and Linear with L1Unstructured, amount = 1 - density; prune.remove is never called",
    f"{REPO_APB} utils/utils.py load_model, models/__init__.py (registers robustbird as resnet18_robustbird / "
    "vgg16_robustbird) and models/robustbird.py",
]
RST_SOURCES = [
    f"{REPO_RST} config_rst/resnet18-usc-unsigned-cifar.yaml (arch cResNet18) and vgg16-usc-unsigned-cifar.yaml "
    "(arch VGG16): conv_type SubnetConv, bn_type NonAffineBatchNorm; first/last_layer_dense default False (args.py)",
    f"{REPO_RST} models/resnet_cifar.py ResNet/BasicBlock and models/vgg.py VGG: layers, names, head (fc / "
    "classifier = builder.conv1x1(512, classes), no bias)",
    f"{REPO_RST} utils/conv_type.py SubnetConv (scores Parameter of the weight's shape, registered after weight) and "
    "GetSubnet: sort scores.abs() ascending, zero the first int((1 - k) * numel), keep the rest, k = prune_rate; "
    "utils/builder.py conv (bias=False); utils/bn_type.py NonAffineBatchNorm (affine=False)",
    f"{REPO_RST} utils/net_utils.py set_model_prune_rate (the same k on every layer); README: '--prune-rate is the "
    "ratio of remaining weights'",
    f"{REPO_RST} main.py set_gpu (torch.nn.DataParallel(model).cuda()) and save_checkpoint calls: {{epoch, arch, "
    "state_dict, best_acc1, best_acc5, best_train_acc1, best_train_acc5, natural_acc1_at_best_robustness, "
    "optimizer, curr_acc1, curr_acc5}} -> model_best.pth / model_latest.pth; env.yml torch==1.8.1",
    f"{REPO_RST} data/cifar.py: transforms.Normalize(mean=[0.491, 0.482, 0.447], std=[0.247, 0.243, 0.262]) in "
    "the data loader; the model has no normalization",
    f"{REPO_APB} models/rst.py (empty) and models/__init__.py ('TODO: solve bug with RST models')",
]
MAD_SOURCES = [
    f"{REPO_MAD} models/resnet_mask.py ResNet/BasicBlock and models/vgg_mask.py VGG (cfg 16 = 13 convs, 4 'M', "
    "AvgPool2d(2) in forward, classifier Linear_mask(512, 10)); normalization (x - mean) / std in forward with "
    "mean/std plain attributes",
    f"{REPO_MAD} models/operator/mask.py Conv2d_mask / Linear_mask: mask_weight (and mask_bias if bias) Parameters "
    "initialised to f_inv(1) = log(e - 1); forward uses weight * softplus(mask)",
    f"{REPO_MAD} utils/mask_network_utils.py get_mask_network: CIFAR-10 mean [0.4914, 0.4822, 0.4465], std "
    "[0.2023, 0.1994, 0.2010]",
    f"{REPO_MAD} pruner/kfac_MAD_pruner.py _global_remove_weight: conv weights pruned globally (the int(percnt * N) "
    "lowest adversarial saliencies over all convs), the Linear row by row over [weight row | bias] (int(percnt * "
    "513) per row); weight.data *= (1 - onehot); mask_weight/mask_bias reset to f_inv(1); "
    "_optimize_weight_with_delta_L keeps pruned weights (and their grads) at zero",
    f"{REPO_MAD} main_mad_pretrain.py: net.to('cuda:0'); optimizer over non-mask parameters only; saves "
    "{'net': state_dict, 'acc', 'epoch', 'loss', 'args'} as checkpoint/pretrain/<dataset>/..._mad<percnt>_<net><depth>"
    "_best.t7",
    f"{REPO_APB} models/mad.py, models/__init__.py (registered as vgg16_mad / resnet18_mad) and utils/utils.py "
    "load_model",
]
LI20_SOURCES = [
    f"{REPO_LI20} models.py class vgg (depth 16): feature = 13 MaskedConv2d 3x3 (bias=False) + MaskedBN2d + ReLU "
    "with 4 max-pools, classifier = Sequential(MaskedLinear(512, 512), MaskedBN1d(512), ReLU, MaskedLinear(512, 10)),"
    " model = Sequential(feature, AvgPool2d(2), Flatten(), classifier)",
    f"{REPO_LI20} resnet.py ResNet18 (wrapper whose .model is ResNet(BasicBlock, [2, 2, 2, 2]) with MaskedConv2d, "
    "MaskedBN2d, MaskedLinear)",
    f"{REPO_LI20} pruning/layers.py: masks are plain attributes (not saved); set_mask multiplies weight.data by the "
    "mask (and scales Linear bias by the row's kept fraction); forward uses the stored weight",
    f"{REPO_LI20} pruning/methods.py weight_prune: global percentile over |w| / mean(|w|) of every Conv2d and "
    "Linear (first and last included); BN masks zero channels whose preceding filter is all zero",
    f"{REPO_LI20} train.py train_model: torch.save(m.model.state_dict(), args.model_path) (the bare Sequential / "
    "ResNet, no wrapper dict, no 'module.' unless --parallel); m.model.cuda()",
    f"{REPO_LI20} config.py config_vgg16/config_resnet18: norm = True -> utils/data_loader.py Normalize(mean=[0.4914,"
    " 0.4822, 0.4465], std=[0.2023, 0.1994, 0.2010]) in the data loader; README: pytorch 1.5.1",
    f"{REPO_APB} models/li20.py, models/__init__.py (resnet18_li20 / vgg16_li20) and utils/utils.py load_model",
]


def layout(ap_key: str, architecture: str, model: nn.Module, **facts: Any) -> dict[str, Any]:
    """One layout file's content."""
    prefix = facts.pop("prefix", "")
    pruned = facts.pop("pruned_rule")
    reference = facts.pop("reference")
    document: dict[str, Any] = {
        "ap_key": ap_key,
        "architecture": architecture,
        "structures": ["weights"],
        "sources": facts.pop("sources"),
        "serialization": facts.pop("serialization"),
        "storage_location": "cuda:0",
        "container": facts.pop("container"),
        "tensors": tensor_entries(model, prefix, pruned),
        "pruning": facts.pop("pruning"),
        "normalization_in_file": facts.pop("normalization_in_file"),
        "normalization_applied_by_author": facts.pop("normalization_applied_by_author"),
        "original_benchmark_loading": facts.pop("original_benchmark_loading"),
        "forward": {"reference_module": f"tests/support/reference_models_b.py:{reference}",
                    "description": facts.pop("forward")},
    }
    document.update(facts)
    return document


CHEN_NORM = {"mean": list(ref.CIFAR10_MEAN_CHEN), "std": list(ref.CIFAR10_STD_CHEN)}
PREACT_FORWARD = ("normalize ((x - mean) / std, buffers) -> conv1 3x3/1 pad 1 no bias -> layer1..4, each 2 "
                  "pre-activation blocks [bn1-ReLU -> conv1 3x3(stride) -> bn2-ReLU -> conv2 3x3; skip = identity, or shortcut.0 = "
                  "conv1x1(stride) no BN applied to the bn1-ReLU output; out = conv2 + skip]; strides 1,2,2,2, widths "
                  "64,128,256,512 -> bn -> ReLU -> AdaptiveAvgPool2d(1) -> linear 512->10 with bias")
CHEN_VGG_FORWARD = ("normalize ((x - mean) / std, buffers registered after classifier, so last in the file) -> "
                    "features: 13 x [conv 3x3 pad 1 WITH bias, BatchNorm2d (affine), ReLU] with MaxPool2d(2) after "
                    "convs 2, 4, 7, 10 and 13 (5 pools, 32 -> 1), then AvgPool2d(1) (identity) -> flatten -> classifier Linear "
                    "512->10 with bias")
CHEN_VGG_INDEXES = "features.{0,3,7,10,14,17,20,24,27,30,34,37,40} conv, +1 BN, pools at 6,13,23,33,43, AvgPool at 44"


CHEN_REFERENCES: dict[str, tuple[str, Callable[[], nn.Module], str]] = {
    "resnet18": ("PreActResNet18", ref.PreActResNet18, PREACT_FORWARD),
    "vgg16": ("ChenVGG16", ref.ChenVGG16, CHEN_VGG_FORWARD + "; " + CHEN_VGG_INDEXES),
}


def flyingbird(architecture: str) -> dict[str, Any]:
    name, build, forward = CHEN_REFERENCES[architecture]
    return layout(
        "FlyingBird_Chen2021Sparsity", architecture, build(),
        pruned_rule=weights_of_conv_and_linear, reference=name, sources=FB_SOURCES,
        serialization="zip",
        container={"state_dict_at": "state_dict",
                   "extras": {"best_sa": "float", "best_ra": "float", "epoch": "int", "optimizer": "optimizer_state",
                              "scheduler": "scheduler_state", "iter_step": "int", "result": "dict_of_lists_of_float",
                              "mask_info": "sparse_masks_info"},
                   "order": ["best_sa", "best_ra", "epoch", "state_dict", "optimizer", "scheduler", "iter_step",
                             "result", "mask_info"],
                   "extras_notes": (
                       "scheduler: torch.optim.lr_scheduler.MultiStepLR.state_dict() (its 'milestones' is a "
                       "collections.Counter; torch.load(weights_only=True) of torch 2.x accepts it). result: dict of "
                       "lists of float (train_acc, val_sa, val_ra, test_sa, test_ra) plus best_ra_epoch (int), "
                       "total_fired_weights (number) and, with --fbp, prune_epochs/growth_epochs (lists). "
                       "mask_info: {'lossinfo', "
                       "'train_val_diff', 'prune_epochs', 'growth_epochs': lists, 'masks': dict '<param name>_<index>' "
                       "(e.g. 'conv1.weight_1') -> float32 0/1 cuda:0 tensor of the weight's shape, 'name2death_rate': "
                       "dict, 'decay': (SGD optimizer state_dict, CosineAnnealingLR state_dict)}. The benchmark's "
                       "file (.tar) may be this full checkpoint or a re-save; only 'state_dict' is read.")},
        pruning={"how": "zeros_in_weight", "granularity": "weights",
                 "layers": "every conv (first conv and 1x1 shortcut convs included) and the linear classifier's "
                           "weight; no bias, no BatchNorm",
                 "notes": "Sparse training with a fixed global budget: density = 1 - sparsity over all conv + linear "
                          "weights, spread per layer by IGQ then moved by prune/regrow; masks multiply weight.data "
                          "after every step, so the stored weights hold exact zeros. The 0/1 masks are also in "
                          "mask_info['masks'] (not needed to fold)."},
        normalization_in_file=CHEN_NORM,
        normalization_applied_by_author="inside the model (buffers normalize.mean / normalize.std, float32 [3])",
        original_benchmark_loading=(
            "models.__dict__['FlyingBird_Chen2021Sparsity_R18']() = models/flyingbird.py ResNet18 (PreAct, normalize = "
            "torchvision transforms.Normalize with the same constants, no buffers); "
            "load_state_dict(checkpoint['state_dict'], strict=False): normalize.mean/std ignored, every other key "
            "matches" if architecture == "resnet18" else
            "models.__dict__['FlyingBird_Chen2021Sparsity_V16']() calls models/flyingbird.py vgg16_bn(num_classes) "
            "without its required argument -> TypeError before loading; with num_classes=10 the keys would match "
            "(strict=False, normalize buffers ignored)"),
        forward=forward,
    )


def robustbird(architecture: str) -> dict[str, Any]:
    name, build, forward = CHEN_REFERENCES[architecture]
    return layout(
        "RobustBird_Chen2021Sparsity", architecture, prune_reparametrized(build()),
        pruned_rule=weights_of_conv_and_linear, reference=name, sources=RB_SOURCES,
        serialization="zip",
        container={"state_dict_at": "state_dict",
                   "extras": {"best_sa": "float", "best_ra": "float", "epoch": "int", "optimizer": "optimizer_state",
                              "scheduler": "scheduler_state", "result": "dict_of_lists_of_float"},
                   "order": ["best_sa", "best_ra", "epoch", "state_dict", "optimizer", "scheduler", "result"],
                   "extras_notes": "scheduler: MultiStepLR.state_dict() (collections.Counter milestones). result: "
                                   "{'train_acc', 'val_sa', 'val_ra', 'test_sa', 'test_ra'} lists of float."},
        pruning={"how": "weight_orig_mask", "granularity": "weights",
                 "layers": "every Conv2d (first conv and 1x1 shortcuts included) and the Linear classifier: "
                           "<layer>.weight_orig + <layer>.weight_mask; biases (VGG convs, linear) and BatchNorm not "
                           "pruned",
                 "notes": "torch.nn.utils.prune.global_unstructured(L1Unstructured, amount = 1 - density): ONE global "
                          "magnitude threshold over all those weights, so per-layer sparsity varies. The "
                          "reparametrization is never removed: the file holds weight_orig (dense, trained; entries "
                          "under a 0 mask are not zero, only decayed) and weight_mask (float32 0/1); the effective "
                          "weight is weight_orig * weight_mask. In each module's entries the order is bias (if any), "
                          "weight_orig, weight_mask (weight_orig is re-registered after bias)."},
        normalization_in_file=CHEN_NORM,
        normalization_applied_by_author="inside the model (buffers normalize.mean / normalize.std, float32 [3])",
        original_benchmark_loading=(
            "KeyError: models/__init__.py registers the RobustBird classes as resnet18_robustbird / vgg16_robustbird, "
            "not 'RobustBird_Chen2021Sparsity_R18/_V16'. Even under that name, models/robustbird.py (plain conv "
            "weights, transforms.Normalize) would refuse the weight_orig/weight_mask keys under strict=True "
            "(RuntimeError, not caught)"),
        forward=forward + "; every conv/linear uses weight_orig * weight_mask",
    )


RST_CHECKPOINT = {
    "state_dict_at": "state_dict",
    "extras": {"epoch": "int", "arch": "str", "best_acc1": "float", "best_acc5": "float", "best_train_acc1": "float",
               "best_train_acc5": "float", "natural_acc1_at_best_robustness": "float", "optimizer": "optimizer_state",
               "curr_acc1": "float", "curr_acc5": "float"},
    "order": ["epoch", "arch", "state_dict", "best_acc1", "best_acc5", "best_train_acc1", "best_train_acc5",
              "natural_acc1_at_best_robustness", "optimizer", "curr_acc1", "curr_acc5"],
    "extras_notes": "arch is 'cResNet18' or 'VGG16'. natural_acc1_at_best_robustness is None only in the epoch-0 "
                    "'initial.state'; in model_best.pth it is a float.",
}


def rst(architecture: str) -> dict[str, Any]:
    model = ref.BasicResNet18("subnet", 0.1) if architecture == "resnet18" else ref.SubnetVGG16(0.1)
    head = "module.fc" if architecture == "resnet18" else "module.classifier"
    return layout(
        "RST_Fu2021Drawing", architecture, model,
        prefix="module.",
        pruned_rule=lambda module, name: isinstance(module, ref.SubnetConv2d) and name == "weight",
        reference="BasicResNet18(layers='subnet', density=1 - sparsity/100)" if architecture == "resnet18"
        else "SubnetVGG16(density=1 - sparsity/100)",
        sources=RST_SOURCES,
        serialization="zip",
        container=RST_CHECKPOINT,
        pruning={"how": "scores_topk_per_layer", "granularity": "weights",
                 "layers": f"every conv: first conv, all 3x3 and 1x1 shortcut convs, and the 1x1-conv classifier "
                           f"({head}); BatchNorm has no parameters (affine=False)",
                 "notes": "Weights are stored DENSE (signed-constant init, frozen during the search); the kept set of "
                          "each layer is chosen from abs(scores) of that layer alone: sort abs(scores) ascending, "
                          "zero the first int((1 - k) * numel) entries, keep the rest, with k = --prune-rate = the "
                          "KEPT fraction (0.1 / 0.05 / 0.01 for sparsity 90 / 95 / 99). kept = numel - int((1 - k) * "
                          "numel), i.e. ceil(k * numel) up to float rounding, which is often one more than "
                          "round(k * numel): see kept_per_layer_by_sparsity. Ties follow torch.sort order (random "
                          "scores have none). Effective weight = weight * mask; sparsity must be measured after "
                          "folding. ('ft_full' finetuning would bake the mask into the weights and stop using "
                          "scores; the benchmark's RST entries are sparse tickets, so scores apply.)",
                 "kept_per_layer_by_sparsity": rst_kept_counts(model, "module.")},
        normalization_in_file=None,
        normalization_applied_by_author="in the data loader: mean [0.491, 0.482, 0.447], std [0.247, 0.243, 0.262] "
                                        "(the PGD trainer scales eps by std (0.2471, 0.2435, 0.2616))",
        original_benchmark_loading="not loadable: models/rst.py is empty and its import is commented out ('TODO: "
                                   "solve bug with RST models') -> KeyError in models.__dict__",
        forward=("post-activation CIFAR ResNet18 (config arch cResNet18; the README's 'PreActResNet18' is wrong): "
                 "conv1 3x3/1 -> bn1 -> ReLU -> layer1..4 of 2 BasicBlocks [conv1 3x3(stride) - bn1 - ReLU - conv2 "
                 "3x3 - bn2, + identity or shortcut = (shortcut.0 conv1x1(stride), shortcut.1 BN), ReLU] -> "
                 "F.avg_pool2d(4) -> fc (1x1 conv 512->10, no bias) -> flatten. Every conv is SubnetConv "
                 "(weight * top-k(abs(scores)) mask), no conv bias, every BN affine=False"
                 if architecture == "resnet18" else
                 "features: 13 x [SubnetConv 3x3 pad 1 no bias, BatchNorm2d(affine=False), ReLU] with MaxPool2d(2) "
                 "after convs 2, 4, 7, 10, 13 (5 pools), then AvgPool2d(1) at index 44 -> classifier (1x1 "
                 "SubnetConv 512->10, no bias) on the 1x1 map -> flatten; no normalization inside"),
    )


def mad(architecture: str) -> dict[str, Any]:
    model = (ref.BasicResNet18("softplus_mask", mean=ref.CIFAR10_MEAN_MAD, std=ref.CIFAR10_STD_MAD)
             if architecture == "resnet18" else ref.MadVGG16())
    head = "linear" if architecture == "resnet18" else "classifier"
    return layout(
        "MAD_Lee2022Masking", architecture, model,
        pruned_rule=mad_pruned,
        reference="BasicResNet18(layers='softplus_mask', mean=CIFAR10_MEAN_MAD, std=CIFAR10_STD_MAD)"
        if architecture == "resnet18" else "MadVGG16",
        sources=MAD_SOURCES,
        serialization="zip",
        container={"state_dict_at": "net",
                   "extras": {"acc": "float", "epoch": "int", "loss": "tensor0d", "args": "argparse_namespace"},
                   "order": ["net", "acc", "epoch", "loss", "args"],
                   "extras_notes": (
                       "loss: 0-d float32 cuda:0 tensor saved with requires_grad=True (computed outside no_grad; "
                       "torch.load(weights_only=True) accepts it). args: argparse.Namespace(dataset='cifar10', "
                       "network='resnet'|'vgg', depth=18|16, device='cuda:0', percnt=0.9|0.95|0.99 (float), "
                       "pruning_mode='element', largest=False, learning_rate=0.1, weight_decay=0.0002, batch_size=128 "
                       "(int default of a float option), epoch=60, attack='pgd', eps=0.03, steps=10); needs "
                       "argparse.Namespace allowed in weights-only loading.")},
        pruning={"how": "zeros_in_weight", "granularity": "weights",
                 "layers": f"every conv (first conv and 1x1 shortcuts included) and the classifier ({head}) weight "
                           "AND bias; BatchNorm not pruned",
                 "notes": "The softplus masks do NOT carry the pruning: _global_remove_weight zeroes weights "
                          "(weight.data *= 1 - onehot) and resets every mask_weight/mask_bias to f_inv(1) = log(e - 1)"
                          " = 0.5413 (softplus = 1.0 exactly in float32); masks are not in the optimizer and stay "
                          "constant, so weight * softplus(mask) == weight. Sparsity ('percnt' = fraction REMOVED, "
                          "0.9/0.95/0.99): convs pruned globally (the int(percnt * total) lowest adversarial "
                          "saliencies over all conv weights, so per-layer sparsity varies); the classifier pruned "
                          "row by row over its 513 entries [weight row | bias] (int(percnt * 513) per row), so "
                          "classifier biases can be exactly zero. Folding = weight * softplus(mask_weight), bias * "
                          "softplus(mask_bias); measure sparsity on the folded weights (zeros stay zeros)."},
        normalization_in_file=None,
        normalization_applied_by_author="inside forward() from plain attributes (not saved): (x - mean) / std with "
                                        "mean [0.4914, 0.4822, 0.4465], std [0.2023, 0.1994, 0.2010]",
        original_benchmark_loading=(
            "KeyError: models/__init__.py registers MAD as resnet18_mad / vgg16_mad, not "
            "'MAD_Lee2022Masking_R18/_V16' (and those constructors need mean/std arguments). Had it been found, "
            "load_state_dict(checkpoint['net'], strict=True) would match the mask model's keys"),
        forward=("(x - mean) / std -> post-activation ResNet18 (conv1 3x3/1 - bn1 - ReLU - layer1..4 of 2 BasicBlocks "
                 "with shortcut = (conv1x1(stride), BN)) -> F.avg_pool2d(4) -> flatten -> linear 512->10; every conv "
                 "uses weight * softplus(mask_weight) (no conv bias), the linear uses weight * softplus(mask_weight) "
                 "and bias * softplus(mask_bias); BN affine"
                 if architecture == "resnet18" else
                 "(x - mean) / std -> feature: 13 x [conv 3x3 pad 1 no bias (weight * softplus(mask_weight)), "
                 "BatchNorm2d affine, ReLU] with MaxPool2d(2) after convs 2, 4, 7, 10 only (4 pools, 32 -> 2; "
                 "indices feature.{0,3,7,10,14,17,20,24,27,30,34,37,40}) -> AvgPool2d(2) (2x2 -> 1x1) -> flatten -> "
                 "classifier Linear 512->10 (weight * softplus(mask_weight), bias * softplus(mask_bias))"),
    )


def li20(architecture: str) -> dict[str, Any]:
    model = ref.BasicResNet18("plain") if architecture == "resnet18" else ref.Li20VGG16()
    return layout(
        "Li20_Li2020Towards", architecture, model,
        pruned_rule=lambda module, name: is_prunable(module) and name == "weight",
        reference="BasicResNet18(layers='plain')" if architecture == "resnet18" else "Li20VGG16",
        sources=LI20_SOURCES,
        serialization="legacy",
        container={"state_dict_at": None, "extras": {},
                   "extras_notes": "The file IS the state dict (an OrderedDict). serialization: the README pins "
                                   "pytorch 1.5.1, whose torch.save writes the legacy (non-zip) format; a re-save "
                                   "with torch >= 1.6 would be zip - a loader should accept both."},
        pruning={"how": "zeros_in_weight", "granularity": "weights",
                 "layers": "every Conv2d and Linear weight (first conv and last linear included"
                           + ("; 1x1 shortcuts included)" if architecture == "resnet18"
                              else "; both head Linears 3.0 and 3.3)"),
                 "notes": "One global percentile threshold over |w| / mean(|w| of its layer) across all those layers "
                          "(per-layer sparsity varies); weights are multiplied by the 0/1 mask (masks are plain "
                          "attributes, not saved), so zeros are in the weights. set_mask also scales each Linear "
                          "bias by its row's kept fraction, and zeroes BN weight/bias of channels whose preceding "
                          "conv filter (or linear row) is entirely pruned; running stats are untouched."},
        normalization_in_file=None,
        normalization_applied_by_author="in the data loader (config.py sets norm=True for vgg16/resnet18): mean "
                                        "[0.4914, 0.4822, 0.4465], std [0.2023, 0.1994, 0.2010]",
        original_benchmark_loading=(
            "KeyError: models/__init__.py registers resnet18_li20 / vgg16_li20, not 'Li20_Li2020Towards_R18/_V16'. "
            "Had it been found, load_model tries checkpoint['state_dict'] and checkpoint['net'] on a bare state "
            "dict, both KeyError and both swallowed: the model would be returned with random weights, silently"),
        forward=("post-activation ResNet18: conv1 3x3/1 no bias - bn1 - ReLU - layer1..4 of 2 BasicBlocks "
                 "[conv1 3x3(stride) - bn1 - ReLU - conv2 3x3 - bn2 + identity or shortcut (conv1x1(stride), BN), "
                 "ReLU] -> F.avg_pool2d(4) -> flatten -> linear 512->10 with bias; the same keys and shapes as the "
                 "original benchmark's base resnet18; no normalization inside"
                 if architecture == "resnet18" else
                 "bare nn.Sequential: 0 = features: 13 x [conv 3x3 pad 1 no bias, BatchNorm2d affine, ReLU] with "
                 "MaxPool2d(2) after convs 2, 4, 7, 10 (4 pools; indices 0.{0,3,7,10,14,17,20,24,27,30,34,37,40}); "
                 "1 = AvgPool2d(2) (2x2 -> 1x1); 2 = Flatten; 3 = head: 3.0 Linear 512->512 with bias, 3.1 "
                 "BatchNorm1d(512), 3.2 ReLU, 3.3 Linear 512->10 with bias; no normalization inside"),
    )


BUILDERS: dict[str, Callable[[str], dict[str, Any]]] = {
    "FlyingBird_Chen2021Sparsity": flyingbird,
    "RobustBird_Chen2021Sparsity": robustbird,
    "RST_Fu2021Drawing": rst,
    "MAD_Lee2022Masking": mad,
    "Li20_Li2020Towards": li20,
}


def render(document: dict[str, Any]) -> str:
    """JSON with two-space indentation and one line per tensor entry."""
    placeholder = "@@TENSORS@@"
    text = json.dumps({**document, "tensors": placeholder}, indent=2)
    rows = ",\n".join("    " + json.dumps(entry) for entry in document["tensors"])
    return text.replace(json.dumps(placeholder), "[\n" + rows + "\n  ]") + "\n"


def main() -> None:
    torch.manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    for ap_key, build in BUILDERS.items():
        for architecture in ("resnet18", "vgg16"):
            path = OUT / f"{ap_key}__{architecture}.json"
            path.write_text(render(build(architecture)))
            print(path)


if __name__ == "__main__":
    main()
