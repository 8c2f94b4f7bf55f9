"""Build the whole graded world (data, biased and control models, contract models) from plain options; no pytest."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmark import shortcut
from benchmark.data import World, build_world
from benchmark.errors import ShortcutNotLearned
from benchmark.models.parallel import train_missing
from benchmark.models.train import TrainedModel, default_device, get_seeded_model, get_trained_model
from benchmark.options import BenchOptions, model_seeds
from benchmark.pinning import PinnedModelError, PinnedModels
from benchmark.profiles import Profile

# Seeds of the untrained models the method contract runs on for the profile's other architectures.
CONTRACT_INIT_SEED = 1000


ARMS = ("biased", "control", "absent")


def model_name(arm: str, seed: int, first: int) -> str:
    """The name a baseline pins an arm's model under: "biased" for the first seed, "biased-seed3" for another."""
    return arm if seed == first else f"{arm}-seed{seed}"


@dataclass
class Replicate:
    """The three arms trained from one training seed."""

    seed: int
    biased: TrainedModel
    control: TrainedModel
    absent: TrainedModel


@dataclass
class Bench:
    """The data and every model of one run (the arms of the first training seed, and of every other in replicates)."""

    profile: Profile
    options: BenchOptions
    world: World
    biased: TrainedModel
    control: TrainedModel  # trained with the mark on both classes alike: present, but no label information
    absent: TrainedModel  # trained on the same images without any mark
    contract: dict[str, TrainedModel] = field(default_factory=dict)  # "contract-ARCH-SPLIT" -> untrained model
    # Every training seed's arms, the first seed's (the fields above) included; empty means that seed alone.
    replicates: list[Replicate] = field(default_factory=list)

    def seeds(self) -> list[Replicate]:
        """Every training seed's arms, first seed first."""
        first = self.options.seed
        return self.replicates or [Replicate(first, self.biased, self.control, self.absent)]

    def for_seed(self, r: Replicate) -> Bench:
        """This bench with one training seed's arms and its share of the graded images (the grader's view of it)."""
        return dataclasses.replace(self, profile=self.profile.per_seed(len(self.seeds())), biased=r.biased,
                                   control=r.control, absent=r.absent, replicates=[r])

    def arm_models(self) -> dict[str, TrainedModel]:
        """Every trained arm model of every seed, by the name a baseline pins it under."""
        first = self.seeds()[0].seed
        return {model_name(arm, r.seed, first): getattr(r, arm) for r in self.seeds() for arm in ARMS}

    @property
    def device(self) -> torch.device:
        """Device the models live on."""
        return next(self.biased.model.parameters()).device

    def all_models(self) -> dict[str, TrainedModel]:
        """Every model the grid grades on, by the name a baseline pins it under."""
        return {**self.arm_models(), **self.contract}

    def contract_models(self) -> dict[str, dict[str, torch.nn.Module]]:
        """{arch: {"biased": model, "control": model}} for every architecture the profile's contract covers."""
        out = {self.profile.arch: {"biased": self.biased.model, "control": self.control.model}}
        for name, m in self.contract.items():
            _, arch, split = name.split("-")
            out.setdefault(arch, {})[split] = m.model
        return out


def check_shortcut(biased: TrainedModel, world: World, seed: int) -> None:
    """Raise ShortcutNotLearned (what was measured, why it is not enough, what to try) unless ``biased`` can be graded
    by :func:`benchmark.shortcut.grid_stop`."""
    reason = shortcut.grid_stop(biased.card, len(shortcut.stored_confident_flips(biased, world)), seed=seed)
    if reason:
        raise ShortcutNotLearned(reason)


def contract_names(profile: Profile) -> list[tuple[str, str, str, int]]:
    """(name, arch, split, init seed) of each untrained contract model of the profile's other architectures."""
    others = [a for a in profile.contract_archs if a != profile.arch]
    return [(f"contract-{arch}-{split}", arch, split, CONTRACT_INIT_SEED + 10 * i + j)
            for i, arch in enumerate(others) for j, split in enumerate(("biased", "control"))]


def _from_pin(pinned: PinnedModels, name: str, split: str, device: torch.device) -> TrainedModel:
    if name not in pinned.models:
        raise PinnedModelError(f"{pinned.source} pins no {name!r} model (it pins {sorted(pinned.models)}); record "
                               f"it again with `pytest suites/ --bench-update-baseline {pinned.source}`")
    model, card, path = pinned.models[name]
    return TrainedModel(model.to(device), split, card, path.parent, cache_hit=True, weights_file=path,
                        pinned_by=str(pinned.source))


Gate = Callable[[TrainedModel, World, int], None]


def prepare(profile: Profile, options: BenchOptions, *, progress: bool = True,
            pinned: PinnedModels | None = None, train_unpinned: bool = False, world: World | None = None,
            gate: Gate | None = check_shortcut) -> Bench:
    """Build (or load from cache) the world; train (or load) every model, or take them from ``pinned``.

    ``train_unpinned``: a model ``pinned`` lacks is trained (a baseline update adding a model) instead of
    refused (compare mode). ``world``: the options' world, already built by the caller. ``gate``: called on each
    seed's biased model, before that seed's other arms train; it raises :class:`ShortcutNotLearned` to stop (the grid's
    rule by default; the sweep passes its own, None checks nothing). On the CPU the models the cache lacks train side
    by side in processes of their own (:mod:`benchmark.models.parallel`), all biased ones queued first."""
    if world is None:
        world = build_world(options.data_spec(profile), Path(options.cache_root) / "datasets")
    device = torch.device(options.device) if options.device else default_device()
    cache = Path(options.cache_root) / "models"
    seeds = model_seeds(profile, options)

    def trains(arm: str, seed: int) -> bool:
        return pinned is None or (train_unpinned and model_name(arm, seed, seeds[0]) not in pinned.models)

    trained = set()  # (arm, seed) of the models train() trained: get() loads them, and says this call trained them

    def get(arm: str, seed: int) -> TrainedModel:
        if not trains(arm, seed):
            return _from_pin(pinned, model_name(arm, seed, seeds[0]), arm, device)
        m = get_trained_model(world, arm, profile, seed=seed, cache_dir=cache, device=device, progress=progress)
        return dataclasses.replace(m, cache_hit=False) if (arm, seed) in trained else m

    def train(arms: tuple[str, ...], then=None) -> None:  # the ones the cache lacks, side by side where it pays
        jobs = [(arm, seed) for seed in seeds for arm in arms if trains(arm, seed)]
        trained.update(train_missing(world, profile, jobs, cache, device, progress=progress, then=then))

    biased = {}

    def gated(seed: int) -> None:
        biased[seed] = get("biased", seed)
        if gate is not None:
            gate(biased[seed], world, seed)

    def others(job, here: bool) -> list:  # a biased model the pool just stored: gate it, then its seed's other arms
        if here:
            trained.add(job)  # the pool returns what it trained only at its end; get() must say so now
        if job[0] != "biased":
            return []  # the pool calls back for the other arms it queued too: their seed was gated already
        gated(job[1])
        return [(arm, job[1]) for arm in ("control", "absent") if trains(arm, job[1])]

    # Every seed's biased model queues first, and a seed's other arms only once its biased model passes the gate: a
    # stop costs the biased models and at most the other models already training.
    train(("biased",), then=others)
    for seed in seeds:
        if seed not in biased:  # cached, or trained here (no pool ran)
            gated(seed)
    train(("control", "absent"))  # what no pool trained (one model to train, a GPU, a worker that died)
    replicates = [Replicate(seed, biased[seed], get("control", seed), get("absent", seed)) for seed in seeds]
    contract = _contract_models(profile, pinned, train_unpinned, cache, device)
    first = replicates[0]
    return Bench(profile, options, world, first.biased, first.control, first.absent, contract,
                 replicates if len(replicates) > 1 else [])


def _contract_models(profile: Profile, pinned: PinnedModels | None, train_unpinned: bool, cache: Path,
                     device: torch.device) -> dict[str, TrainedModel]:
    """The contract's seeded models of the other architectures: from the pins, or built (and cached) here."""
    contract = {}
    for name, arch, split, seed in contract_names(profile):
        if pinned is None or (train_unpinned and name not in pinned.models):
            contract[name] = get_seeded_model(arch, split, profile, seed, cache_dir=cache, device=device)
        else:
            contract[name] = _from_pin(pinned, name, split, device)
    return contract
